//! Delta records (format 7): `prune --recompress` stores the chunks of an
//! old checkpoint version as deltas of an older whole version's bytes, its
//! key (XOR, byte planes, zstd). Through a real mount: the store shrinks far below what
//! zstd alone gives, every version reads back byte-exact (live, snapshots,
//! after a remount, from a recovered replica), a kept delta keeps its
//! bases when the versions that held them are dropped, damage is EIO
//! never wrong bytes, and a crash at any step of the round loses nothing.
// Tests and examples may unwrap, and kill/signal their own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use common::{Mount, Rng, packs_bytes, revfs, verify_clean};
use std::fs;
use std::path::Path;
use std::time::Duration;

/// A safetensors checkpoint of f32 tensors (`names`, `values` each).
fn safetensors(tensors: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut header = String::from("{\"__metadata__\":{\"format\":\"pt\"}");
    let mut at = 0;
    for (name, data) in tensors {
        header += &format!(
            ",\"{name}\":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{at},{}]}}",
            data.len() / 4,
            at + data.len()
        );
        at += data.len();
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    for (_, data) in tensors {
        out.extend_from_slice(data);
    }
    out
}

/// f32 weights near N(0, 0.02): random mantissas, few exponents.
fn weights(r: &mut Rng, values: usize) -> Vec<u8> {
    (0..values)
        .flat_map(|_| {
            let x = r.next();
            let m = (x & 0x7f_ffff) as u32;
            let e = 120 + (x >> 40) as u32 % 3;
            let s = ((x >> 50) & 1) as u32;
            ((s << 31) | (e << 23) | m).to_le_bytes()
        })
        .collect()
}

/// A full-training step: every value moves by a few units in the last
/// place (its low mantissa bits change).
fn train(r: &mut Rng, t: &mut [u8]) {
    for w in t.chunks_exact_mut(4) {
        let x = r.next();
        w[0] ^= (x & 0x3f) as u8;
        if x & 0x300 == 0 {
            w[1] ^= ((x >> 12) & 3) as u8;
        }
    }
}

/// Saves `data` at `path` as torch.save users do (temporary file, fsync,
/// rename over) and waits for the commit holding it.
fn save(m: &Mount, name: &str, data: &[u8]) {
    use std::io::Write;
    let tmp = m.p(&format!("{name}.tmp"));
    let mut f = fs::File::create(&tmp).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
    fs::rename(&tmp, m.p(name)).unwrap();
    common::commit(&m.store);
}

/// The six tensors of the test checkpoint, fresh weights.
fn layers(r: &mut Rng) -> Vec<(String, Vec<u8>)> {
    (0..6)
        .map(|i| (format!("layer{i}.weight"), weights(r, 90_000 + i * 7)))
        .collect()
}

/// Versions of one checkpoint, oldest first: full-training steps, and one
/// re-save with a tensor added in front (every offset moves).
fn versions(steps: usize) -> Vec<Vec<u8>> {
    let mut r = Rng::new(42);
    let mut tensors = layers(&mut r);
    let mut out = Vec::new();
    for step in 0..steps {
        if step > 0 {
            for (_, t) in tensors.iter_mut() {
                train(&mut r, t);
            }
        }
        if step == 3 {
            tensors.insert(0, ("embed.bias".into(), weights(&mut r, 301)));
        }
        out.push(safetensors(&tensors));
    }
    out
}

/// The delta records of an unmounted store, and how many of their bases
/// are deltas themselves (a read then follows more than one base).
fn delta_depths(store: &Path) -> (usize, usize) {
    let r = revfs::repo::Repo::open(store, revfs::engine::Options::default()).unwrap();
    let (mut deltas, mut deep) = (0, 0);
    for entry in r.engine.db.index_all() {
        let (id, e) = entry.unwrap();
        if !e.is_delta() {
            continue;
        }
        deltas += 1;
        for b in r.engine.store.bases(&id, &e).unwrap() {
            if r.engine
                .store
                .locate(&b)
                .unwrap()
                .is_some_and(|x| x.is_delta())
            {
                deep += 1;
            }
        }
    }
    (deltas, deep)
}

/// At least `min` delta records in the unmounted `store`, every one on
/// whole bases: a read of any version follows one base.
fn assert_one_base(store: &Path, min: usize) {
    let (deltas, deep) = delta_depths(store);
    assert!(
        deltas >= min && deep == 0,
        "{deltas} deltas, {deep} on deltas"
    );
}

fn prune_json(target: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args: Vec<&std::ffi::OsStr> = vec!["prune".as_ref(), target.as_os_str()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    args.push("--json".as_ref());
    let (ok, out) = revfs(&args);
    assert!(ok, "{out}");
    serde_json::from_str(&out).unwrap()
}

/// Every version `revfs log` lists for `file`, read through its snapshot
/// path, must be one of `expected`, and all of `expected` must be there.
fn check_versions(file: &Path, expected: &[Vec<u8>]) {
    let (ok, out) = revfs(&["log".as_ref(), file.as_os_str(), "--json".as_ref()]);
    assert!(ok, "{out}");
    let log: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut seen = vec![false; expected.len()];
    let mnt = file.parent().unwrap();
    for v in log.as_array().unwrap() {
        let got = fs::read(mnt.join(v["path"].as_str().unwrap())).unwrap();
        let k = expected.iter().position(|e| *e == got);
        assert!(k.is_some(), "version {} reads back wrong", v["version"]);
        seen[k.unwrap()] = true;
    }
    assert!(seen.iter().all(|s| *s), "versions missing: {seen:?}");
}

/// Flips `bit` of the byte at len / d of the newest pack (or the oldest),
/// for each d.
fn flip_pack(store: &Path, newest: bool, bit: u8, at: &[usize]) {
    let mut packs: Vec<_> = fs::read_dir(store.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    packs.sort();
    let pack = if newest { packs.last() } else { packs.first() }.unwrap();
    let mut bytes = fs::read(pack).unwrap();
    let n = bytes.len();
    for d in at {
        bytes[n / d] ^= bit;
    }
    fs::write(pack, &bytes).unwrap();
}

/// A mount with a replica whose history of `steps` checkpoint versions
/// was recompressed into deltas and replicated.
fn deltas_with_replica(steps: usize) -> Option<(Mount, std::path::PathBuf, Vec<Vec<u8>>)> {
    let (m, replica) = Mount::with_replica(&[])?;
    let vs = versions(steps);
    write_history(&m, &vs);
    common::wait_replicated(&m.store, Duration::from_secs(30));
    let r = prune_json(&m.mnt, &["--recompress"]);
    assert!(r["deltas_written"].as_u64().unwrap() >= 5, "{r}");
    common::wait_replicated(&m.store, Duration::from_secs(30));
    Some((m, replica, vs))
}

fn write_history(m: &Mount, vs: &[Vec<u8>]) {
    for v in vs {
        save(m, "model.safetensors", v);
    }
    assert!(fs::read(m.p("model.safetensors")).unwrap() == *vs.last().unwrap());
}

#[test]
fn old_checkpoint_versions_become_deltas_and_every_version_reads_back_exactly() {
    let Some(mut m) = Mount::new(&[]) else {
        return;
    };
    let vs = versions(7);
    write_history(&m, &vs);
    let raw: u64 = vs.iter().map(|v| v.len() as u64).sum();
    let r = prune_json(&m.mnt, &["--recompress"]);
    let deltas = r["deltas_written"].as_u64().unwrap();
    assert!(deltas >= 20, "{r}");
    let after = packs_bytes(&m.store);
    // 7 versions of 2.1 MiB: zstd alone leaves each at ~0.8 of raw; the
    // six old ones as deltas take under half of that.
    assert!(
        after * 100 < raw * 50,
        "stored {after} of {raw} raw bytes: {r}"
    );
    check_versions(&m.p("model.safetensors"), &vs);
    // A second round makes no more deltas (a chain is never redone).
    let again = prune_json(&m.mnt, &["--recompress"]);
    assert_eq!(again["deltas_written"], 0, "{again}");
    m.unmount();
    verify_clean(&m.store);
    // Every old version is a delta of the first (its key): a read of any
    // of them follows one base.
    assert_one_base(&m.store, 20);
    // From the records, not the page cache.
    m.start(&[]);
    check_versions(&m.p("model.safetensors"), &vs);
    // Two more versions: the old newest and the next become deltas of the
    // same key, the first version (within KEY_SPAN of it).
    let mut next = vs.clone();
    let mut r2 = Rng::new(7);
    for _ in 0..2 {
        let mut t = next.last().unwrap().clone();
        let data_at = 8 + u64::from_le_bytes(t[..8].try_into().unwrap()) as usize;
        train(&mut r2, &mut t[data_at..]);
        save(&m, "model.safetensors", &t);
        next.push(t);
    }
    let r = prune_json(&m.mnt, &["--recompress"]);
    assert!(r["deltas_written"].as_u64().unwrap() >= 5, "{r}");
    check_versions(&m.p("model.safetensors"), &next);
    m.unmount();
    verify_clean(&m.store);
    assert_one_base(&m.store, 25);
}

#[test]
fn a_version_the_next_one_shares_is_still_a_delta_of_the_key() {
    let Some(mut m) = Mount::new(&[]) else {
        return;
    };
    // Two training steps (the second adds a tensor in front, unlike
    // anything before: the version's own chunks are no deltas), a re-save
    // of it with other metadata (which holds every chunk of it but the
    // first), two more steps.
    let mut r = Rng::new(9);
    let mut tensors = layers(&mut r);
    let mut vs: Vec<Vec<u8>> = Vec::new();
    for step in 0..6 {
        if step == 3 {
            let mut v = vs[2].clone();
            let at = v.windows(4).position(|w| w == b"\"pt\"").unwrap();
            v[at + 1..at + 3].copy_from_slice(b"np");
            vs.push(v);
            continue;
        }
        if step > 0 {
            for (_, t) in tensors.iter_mut() {
                train(&mut r, t);
            }
        }
        if step == 2 {
            tensors.insert(0, ("embed.weight".into(), weights(&mut r, 40_000)));
        }
        vs.push(safetensors(&tensors));
    }
    write_history(&m, &vs);
    let r = prune_json(&m.mnt, &["--recompress"]);
    check_versions(&m.p("model.safetensors"), &vs);
    m.unmount();
    verify_clean(&m.store);
    // The first and the newest whole, the other four deltas of the first:
    // 2.5 versions' bytes; taking the version before the re-save as a key
    // (nothing of it was planned) keeps its chunks whole too: 3.0.
    let one = vs[5].len() as u64;
    let stored = packs_bytes(&m.store);
    assert!(
        stored * 100 < one * 270,
        "stored {stored} for {one} a version: {r}"
    );
    assert_one_base(&m.store, 20);
}

#[test]
fn a_kept_delta_keeps_its_bases_when_their_versions_are_dropped() {
    let Some(mut m) = Mount::new(&[]) else {
        return;
    };
    let vs = versions(4);
    write_history(&m, &vs[..2]);
    let (ok, out) = revfs(&[
        "snapshot".as_ref(),
        "create".as_ref(),
        m.mnt.as_os_str(),
        "second".as_ref(),
    ]);
    assert!(ok, "{out}");
    write_history(&m, &vs[2..]);
    let r = prune_json(&m.mnt, &["--recompress"]);
    assert!(r["deltas_written"].as_u64().unwrap() >= 10, "{r}");
    // The file is replaced by unrelated bytes and every other version
    // goes: only "second" (all deltas of the first) and the new head are
    // kept.
    let other = Rng::new(3).bytes(1 << 20);
    save(&m, "model.safetensors", &other);
    let r = prune_json(&m.mnt, &["--keep-last", "1"]);
    assert!(r["commits_dropped"].as_u64().unwrap() >= 3, "{r}");
    // Its key goes, and no kept version is like it: it is stored whole,
    // and the key is freed.
    assert!(r["deltas_rebased"].as_u64().unwrap() >= 1, "{r}");
    assert!(
        fs::read(m.p(".snapshots/second/model.safetensors")).unwrap() == vs[1],
        "the named snapshot's version"
    );
    m.unmount();
    verify_clean(&m.store);
    m.start(&[]);
    assert!(fs::read(m.p(".snapshots/second/model.safetensors")).unwrap() == vs[1]);
    assert!(fs::read(m.p("model.safetensors")).unwrap() == other);
    m.unmount();
}

/// Seven versions, made deltas, with step 2 kept by a named snapshot
/// ("step2"): steps 1 to 5 are deltas of step 0, the head is whole.
fn history_with_step2_named(m: &Mount) -> Vec<Vec<u8>> {
    let vs = versions(7);
    write_history(m, &vs[..3]);
    let (ok, out) = revfs(&[
        "snapshot".as_ref(),
        "create".as_ref(),
        m.mnt.as_os_str(),
        "step2".as_ref(),
    ]);
    assert!(ok, "{out}");
    write_history(m, &vs[3..]);
    let r = prune_json(&m.mnt, &["--recompress"]);
    assert!(r["deltas_written"].as_u64().unwrap() >= 20, "{r}");
    vs
}

/// After `--keep-last 1` on that history: every step but 2 and the head
/// is gone, step 2 reads back exactly, and the store holds the head whole
/// (zstd: ~0.8 of raw) and step 2 re-planned as a delta of it four steps
/// apart (~0.35 here): step 2 whole would take 1.54 of raw, its old key
/// kept as its base more.
fn step2_rebased(m: &Mount, vs: &[Vec<u8>], why: &str) {
    let raw = vs[6].len() as u64;
    let after = packs_bytes(&m.store);
    assert!(
        fs::read(m.p(".snapshots/step2/model.safetensors")).unwrap() == vs[2],
        "{why}: the named snapshot's version"
    );
    assert!(
        fs::read(m.p("model.safetensors")).unwrap() == vs[6],
        "{why}"
    );
    assert!(
        after * 100 < raw * 130,
        "{why}: stored {after} for {raw} raw"
    );
}

#[test]
fn thinning_rebases_a_kept_delta_onto_the_next_kept_version_and_frees_the_versions_between() {
    let Some(mut m) = Mount::new(&[]) else {
        return;
    };
    let vs = history_with_step2_named(&m);
    let r = prune_json(&m.mnt, &["--keep-last", "1"]);
    assert!(r["commits_dropped"].as_u64().unwrap() >= 5, "{r}");
    assert!(r["deltas_rebased"].as_u64().unwrap() >= 5, "{r}");
    step2_rebased(&m, &vs, "rebased");
    // Nothing is left to rebase.
    let again = prune_json(&m.mnt, &["--keep-last", "1"]);
    assert_eq!(again["deltas_rebased"], 0, "{again}");
    m.unmount();
    verify_clean(&m.store);
    m.start(&[]);
    step2_rebased(&m, &vs, "after a remount");
    m.unmount();
}

#[test]
fn when_a_key_goes_the_first_kept_version_after_it_becomes_the_key_of_the_next() {
    let Some(mut m) = Mount::new(&[]) else {
        return;
    };
    let vs = versions(7);
    for (i, v) in vs.iter().enumerate() {
        save(&m, "model.safetensors", v);
        if i == 2 || i == 4 {
            let (ok, out) = revfs(&[
                "snapshot".as_ref(),
                "create".as_ref(),
                m.mnt.as_os_str(),
                format!("step{i}").as_ref(),
            ]);
            assert!(ok, "{out}");
        }
    }
    let r = prune_json(&m.mnt, &["--recompress"]);
    assert!(r["deltas_written"].as_u64().unwrap() >= 20, "{r}");
    // Steps 2 and 4 (deltas of step 0) and the head are kept; step 0 goes.
    let r = prune_json(&m.mnt, &["--keep-last", "1"]);
    assert!(r["commits_dropped"].as_u64().unwrap() >= 4, "{r}");
    assert!(r["deltas_rebased"].as_u64().unwrap() >= 10, "{r}");
    let raw = vs[6].len() as u64;
    let stored = packs_bytes(&m.store);
    // Step 2 whole (~0.8 of raw, the new key), step 4 a delta of it two
    // steps apart (~0.3), the head whole: both whole would be ~2.4.
    assert!(
        stored * 100 < raw * 210,
        "stored {stored} for {raw} raw: {r}"
    );
    let read = |m: &Mount| {
        for (name, v) in [("step2", &vs[2]), ("step4", &vs[4])] {
            let p = m.p(&format!(".snapshots/{name}/model.safetensors"));
            assert!(fs::read(p).unwrap() == *v, "{name}");
        }
        assert!(fs::read(m.p("model.safetensors")).unwrap() == vs[6]);
    };
    read(&m);
    m.unmount();
    verify_clean(&m.store);
    assert_one_base(&m.store, 10);
    m.start(&[]);
    read(&m);
    m.unmount();
}

#[test]
fn a_crash_at_any_step_of_a_rebasing_prune_loses_nothing() {
    let Some(mut base) = Mount::new(&[]) else {
        return;
    };
    let vs = history_with_step2_named(&base);
    base.unmount();
    for point in [
        "prune:dropped",
        "prune:rebase-copied",
        "prune:index-swept",
        "prune:packs-deleted",
        "prune:repack-copied",
        "prune:repack-switched",
    ] {
        let store =
            common::pruned_until_crash(&base.store, base.tmp.path(), &["--keep-last", "1"], point);
        verify_clean(&store);
        // The next prune finishes the job.
        prune_json(&store, &["--keep-last", "1"]);
        verify_clean(&store);
        let mnt = base.tmp.path().join("mnt2");
        fs::create_dir_all(&mnt).unwrap();
        let mut m = Mount::attach(store.clone(), mnt, base.tmp.path().join("log2"));
        m.start(&[]);
        step2_rebased(&m, &vs, point);
        m.unmount();
    }
}

#[test]
fn damage_under_a_delta_is_eio_never_wrong_bytes() {
    let Some(mut m) = Mount::new(&[]) else {
        return;
    };
    let vs = versions(3);
    // The first version is recoded alone: its pack holds the key.
    save(&m, "model.safetensors", &vs[0]);
    m.unmount();
    prune_json(&m.store, &["--recompress"]);
    m.start(&[]);
    write_history(&m, &vs[1..]);
    m.unmount();
    let r = prune_json(&m.store, &["--recompress"]);
    assert!(r["deltas_written"].as_u64().unwrap() >= 5, "{r}");
    // Flip a byte at a half, a third and a quarter of the key's pack.
    flip_pack(&m.store, false, 0x40, &[2, 3, 4]);
    m.start(&[]);
    let (ok, out) = revfs(&[
        "log".as_ref(),
        m.p("model.safetensors").as_os_str(),
        "--json".as_ref(),
    ]);
    assert!(ok, "{out}");
    let log: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut eio = 0;
    for v in log.as_array().unwrap() {
        match fs::read(m.mnt.join(v["path"].as_str().unwrap())) {
            Ok(got) => assert!(
                vs.contains(&got),
                "wrong bytes for version {}",
                v["version"]
            ),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
                eio += 1;
            }
        }
    }
    // The key fails, and the version planned on it with it; the newest
    // version (whole, elsewhere) reads.
    assert_eq!(eio, 2, "{eio} versions failed of {}", vs.len());
    assert!(fs::read(m.p("model.safetensors")).unwrap() == vs[2]);
    m.unmount();
    let (ok, out) = revfs(&["verify".as_ref(), m.store.as_os_str()]);
    assert!(!ok, "{out}");
}

#[test]
fn a_crash_at_any_step_of_a_delta_round_loses_nothing() {
    let Some(mut base) = Mount::new(&[]) else {
        return;
    };
    let vs = versions(4);
    write_history(&base, &vs);
    base.unmount();
    let raw: u64 = vs.iter().map(|v| v.len() as u64).sum();
    for point in [
        "recode:encoded",
        "prune:repack-copied",
        "prune:repack-switched",
    ] {
        let store =
            common::pruned_until_crash(&base.store, base.tmp.path(), &["--recompress"], point);
        verify_clean(&store);
        // The next round finishes the job: the old versions end up deltas.
        let r = prune_json(&store, &["--recompress"]);
        assert!(
            packs_bytes(&store) * 100 < raw * 60,
            "{point}: {} of {raw} raw bytes stored: {r}",
            packs_bytes(&store)
        );
        verify_clean(&store);
        let mnt = base.tmp.path().join("mnt2");
        fs::create_dir_all(&mnt).unwrap();
        let mut m = Mount::attach(store.clone(), mnt, base.tmp.path().join("log2"));
        m.start(&[]);
        check_versions(&m.p("model.safetensors"), &vs);
        m.unmount();
    }
}

/// A store whose old checkpoint version sits in a big cold pack (beside
/// an unrelated 12 MiB file) when it is planned: a small share of that
/// pack, which is not repacked for it while `--max-unused` lets its old
/// records stay there (`OUT_OF_PLACE`).
fn planned_in_a_big_pack() -> Option<(Mount, Vec<Vec<u8>>)> {
    let mut m = Mount::new(&[])?;
    let vs = versions(3);
    fs::write(m.p("data.bin"), Rng::new(5).bytes(12 << 20)).unwrap();
    write_history(&m, &vs[..2]);
    m.unmount();
    prune_json(&m.store, &["--recompress"]);
    m.start(&[]);
    save(&m, "model.safetensors", &vs[2]);
    m.unmount();
    Some((m, vs))
}

/// A round's arguments under which the big pack stays as it is.
const OUT_OF_PLACE: [&str; 3] = ["--recompress", "--max-unused", "50"];

#[test]
fn a_planned_delta_is_written_when_its_pack_is_not_repacked() {
    let Some((mut m, vs)) = planned_in_a_big_pack() else {
        return;
    };
    // By default the round repacks that pack at once: writing the plan
    // out of place would leave it over --max-unused (10 %), and the
    // store would grow by the step until a later round.
    let (at_once, _) = planned_in_a_big_pack().unwrap();
    let before = packs_bytes(&at_once.store);
    let r = prune_json(&at_once.store, &["--recompress"]);
    assert!(r["deltas_written"].as_u64().unwrap() >= 5, "{r}");
    assert!(r["packs_repacked"].as_u64().unwrap() >= 1, "{r}");
    assert!(packs_bytes(&at_once.store) < before, "{r}");
    verify_clean(&at_once.store);
    // Nothing is left for the next round to free.
    let next = prune_json(&at_once.store, &["--recompress"]);
    let freed = next["bytes_freed"].as_u64().unwrap();
    assert!(
        freed < vs[1].len() as u64 / 10,
        "{freed} freed a round later: {next}"
    );
    let before = packs_bytes(&m.store);
    let r = prune_json(&m.store, &OUT_OF_PLACE);
    assert!(r["deltas_written"].as_u64().unwrap() >= 5, "{r}");
    assert_one_base(&m.store, 20);
    verify_clean(&m.store);
    m.start(&[]);
    check_versions(&m.p("model.safetensors"), &vs);
    m.unmount();
    // The old records are garbage in the big pack until it is repacked.
    assert!(packs_bytes(&m.store) < before + (vs[2].len() as u64), "{r}");
    // A crash before the index names the new records, or after: the next
    // round finishes, and every version reads back.
    let (base, _) = planned_in_a_big_pack().unwrap();
    for point in ["prune:repack-switched", "prune:deltas-copied"] {
        let store = common::pruned_until_crash(&base.store, base.tmp.path(), &OUT_OF_PLACE, point);
        verify_clean(&store);
        let r = prune_json(&store, &OUT_OF_PLACE);
        let (deltas, _) = delta_depths(&store);
        assert!(deltas >= 20, "{point}: {deltas} deltas: {r}");
        verify_clean(&store);
        let mnt = base
            .tmp
            .path()
            .join(format!("mnt-{}", point.replace(':', "-")));
        fs::create_dir_all(&mnt).unwrap();
        let mut back = Mount::attach(store.clone(), mnt, base.tmp.path().join("log2"));
        back.start(&[]);
        check_versions(&back.p("model.safetensors"), &vs);
        back.unmount();
    }
}

#[test]
fn a_replica_of_a_store_with_deltas_recovers_every_version() {
    let Some((mut m, replica, vs)) = deltas_with_replica(4) else {
        return;
    };
    m.unmount();
    let rec = m.tmp.path().join("recovered");
    let (ok, out) = revfs(&["recover".as_ref(), replica.as_os_str(), rec.as_os_str()]);
    assert!(ok, "{out}");
    verify_clean(&rec);
    let mnt = m.tmp.path().join("mnt-rec");
    fs::create_dir(&mnt).unwrap();
    let mut back = Mount::attach(rec, mnt, m.tmp.path().join("rec.log"));
    back.start(&[]);
    check_versions(&back.p("model.safetensors"), &vs);
    back.unmount();
}

#[test]
fn damage_under_a_delta_heals_from_the_replica_and_verify_repairs_it() {
    let Some((mut m, replica, vs)) = deltas_with_replica(3) else {
        return;
    };
    m.unmount();
    // Damage the newest pack (deltas and their bases) in several places.
    flip_pack(&m.store, true, 0x10, &[5, 2, 3]);
    m.start(&["--replica", replica.to_str().unwrap()]);
    check_versions(&m.p("model.safetensors"), &vs);
    assert!(m.log_text().contains("healed"), "{}", m.log_text());
    m.unmount();
    let (ok, out) = revfs(&[
        "verify".as_ref(),
        m.store.as_os_str(),
        "--replica".as_ref(),
        replica.as_os_str(),
        "--repair".as_ref(),
    ]);
    assert!(ok, "{out}");
    verify_clean(&m.store);
}

#[test]
fn no_deltas_recodes_without_them_and_a_later_round_still_makes_them() {
    let Some(mut m) = Mount::new(&[]) else {
        return;
    };
    let vs = versions(3);
    write_history(&m, &vs);
    let r = prune_json(&m.mnt, &["--recompress", "--no-deltas"]);
    assert_eq!(r["deltas_written"], 0, "{r}");
    assert!(r["packs_repacked"].as_u64().unwrap() >= 1, "{r}");
    check_versions(&m.p("model.safetensors"), &vs);
    let r = prune_json(&m.mnt, &["--recompress"]);
    assert!(r["deltas_written"].as_u64().unwrap() >= 5, "{r}");
    check_versions(&m.p("model.safetensors"), &vs);
    m.unmount();
    verify_clean(&m.store);
    // --no-deltas means nothing without --recompress.
    let (ok, _) = revfs(&[
        "prune".as_ref(),
        m.store.as_os_str(),
        "--no-deltas".as_ref(),
    ]);
    assert!(!ok);
}
