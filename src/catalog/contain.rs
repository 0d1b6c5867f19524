//! fjall's journal recovery asserts on some damaged bytes. `contained`
//! runs such a call so that its panic becomes an error carrying the
//! panic's message, and prints nothing: a damaged catalog is an error to
//! report in one line, never a crash or a backtrace on the terminal.

use std::cell::Cell;
use std::panic::{self, UnwindSafe};
use std::sync::Once;

thread_local! {
    /// Set while this thread runs a contained call.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

static HOOK: Once = Once::new();

/// Runs `f`; a panic inside it is `Err(its message)`, not printed. Panics
/// of other threads meanwhile print as before.
pub(super) fn contained<T>(f: impl FnOnce() -> T + UnwindSafe) -> Result<T, String> {
    HOOK.call_once(|| {
        let before = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) {
                tracing::debug!("contained panic: {info}");
            } else {
                before(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let out = panic::catch_unwind(f);
    QUIET.with(|q| q.set(was));
    out.map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into())
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_its_message_and_the_next_call_is_plain() {
        let r: Result<(), _> = contained(|| panic!("bad bytes at {}", 7));
        assert_eq!(r, Err("bad bytes at 7".to_string()));
        assert_eq!(contained(|| 5), Ok(5));
        assert!(!QUIET.with(Cell::get));
    }
}
