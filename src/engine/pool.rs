//! A fixed set of worker threads, one a core, that run jobs in the order
//! they are queued (the write path's chunking, hashing and compression:
//! `stream`). Started on first use; the threads live as long as the
//! process and sleep while there is nothing to do.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

pub struct Pool {
    tx: Mutex<Sender<Job>>,
    threads: usize,
}

impl Pool {
    /// The process's pool: as many workers as the machine has cores.
    pub fn shared() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(|| {
            let n = std::thread::available_parallelism().map_or(2, |n| n.get());
            Pool::new("revfs-chunk", n)
        })
    }

    pub fn new(name: &str, n: usize) -> Pool {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = 0;
        for i in 0..n {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || work(&rx));
            threads += usize::from(spawned.is_ok());
        }
        Pool {
            tx: Mutex::new(tx),
            threads,
        }
    }

    /// Queues `job`; runs it on the calling thread when no worker could
    /// be started (a machine out of threads still writes, only slower).
    pub fn run(&self, job: impl FnOnce() + Send + 'static) {
        if self.threads == 0 {
            return job();
        }
        let tx = super::lock(&self.tx);
        if let Err(back) = tx.send(Box::new(job)) {
            drop(tx);
            (back.0)();
        }
    }
}

fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match super::lock(rx).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        job();
    }
}

#[cfg(test)]
mod tests {
    use super::Pool;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    #[test]
    fn every_job_runs_on_a_worker_and_a_pool_without_workers_runs_them_inline() {
        let pool = Pool::new("test", 2);
        let (tx, rx) = channel();
        for i in 0..10 {
            let tx = tx.clone();
            pool.run(move || {
                let name = std::thread::current().name().map(str::to_owned);
                tx.send((i, name)).unwrap();
            });
        }
        let mut got: Vec<_> = (0..10)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        got.sort();
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
        assert!(
            got.iter()
                .all(|g| g.1.as_deref().is_some_and(|n| n.starts_with("test-")))
        );
        let none = Pool::new("none", 0);
        let (tx, rx) = channel();
        none.run(move || tx.send(std::thread::current().id()).unwrap());
        assert_eq!(rx.try_recv().unwrap(), std::thread::current().id());
    }
}
