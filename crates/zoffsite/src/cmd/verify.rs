//! `zoffsite verify`: without any key, checks that every target holds the
//! snapshot it last confirmed for each selected dataset, that whatever it
//! holds matches the source by GUID, and that its pool is healthy and
//! scrubbed. Read-only on both sides.

use serde::Serialize;
use zoffsite_core::holds;
use zoffsite_core::verify::{self, DatasetCheck, PoolCheck};
use zoffsite_exec::proto::client::Session;
use zoffsite_exec::zfs::Zfs;

use crate::cli::VerifyArgs;
use crate::cmd::common;
use crate::exit::{Code as _, Exit};

#[derive(Debug, Serialize)]
struct TargetVerify {
    name: String,
    error: Option<String>,
    pool: Option<PoolCheck>,
    datasets: Vec<DatasetCheck>,
}

pub fn run(args: VerifyArgs) -> Exit {
    let cfg = match common::config_or_exit(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(t) = &args.target {
        if !cfg.targets.iter().any(|x| x.name == *t) {
            eprintln!("zoffsite: no target {t:?} in {}", args.config.display());
            return Exit::Usage;
        }
    }
    let zfs = Zfs::new();
    let mut exit = Exit::Ok;
    let (sel, missing) = match common::list_selection(&cfg, &zfs, &args.config) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("zoffsite: cannot list the configured datasets: {e}");
            return Exit::Error;
        }
    };
    for m in missing {
        eprintln!("zoffsite: {m}");
        exit = exit.max(Exit::Partial);
    }
    let datasets = sel.datasets();
    let (snaps, held) = match zfs.list_snapshots(&datasets) {
        Ok(l) => (l.snapshots, l.held),
        Err(e) => {
            eprintln!("zoffsite: cannot list snapshots: {e}");
            return Exit::Error;
        }
    };
    // Only a held snapshot can be a target's confirmed base.
    let bases = match zfs.holds(&holds::held_ours(&snaps, &held)) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("zoffsite: cannot list holds: {e}");
            return Exit::Error;
        }
    };
    let now = jiff::Timestamp::now().as_second();
    if args.drill {
        let Some(t) = cfg.targets.iter().find(|t| args.target.as_ref().is_none_or(|n| *n == t.name)) else {
            eprintln!("zoffsite: no target to drill with");
            return Exit::Usage;
        };
        let ds = match &args.dataset {
            Some(d) if datasets.contains(d) => d.clone(),
            Some(d) => {
                eprintln!("zoffsite: {d} is not among the selected datasets of {}", args.config.display());
                return Exit::Usage;
            }
            None => match datasets.first() {
                Some(d) => d.clone(),
                None => return exit.max(Exit::Partial),
            },
        };
        let pick = if args.random {
            let ours = snaps.iter().filter(|s| s.snapshot.dataset == ds).cloned().collect();
            super::drill::Pick::RandomOf(ours)
        } else {
            match holds::base(&bases, &t.name, &ds) {
                Some(s) => super::drill::Pick::Named(s.name.clone()),
                None => {
                    eprintln!("zoffsite: target {} has confirmed no snapshot of {ds} yet: back it up first", t.name);
                    return Exit::Partial;
                }
            }
        };
        return match super::drill::drill(&zfs, t, &ds, pick, args.max_time) {
            Ok(d) => {
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&d).expect("serializes"));
                } else {
                    println!(
                        "drill {ds}@{} from {}: {} files, {} bytes compared, {} differences; scratch {} destroyed",
                        d.snapshot, t.name, d.diff.files, d.diff.bytes, d.diff.different, d.scratch
                    );
                }
                for p in &d.diff.differences {
                    eprintln!("zoffsite: drill: {p}");
                }
                if d.diff.different > 0 {
                    exit.max(Exit::Partial)
                } else {
                    exit
                }
            }
            Err(e) => {
                eprintln!("zoffsite: drill of {ds} from {}: {e:#}", t.name);
                Exit::Error
            }
        };
    }
    let mut out = Vec::new();
    for t in cfg.targets.iter().filter(|t| args.target.as_ref().is_none_or(|n| *n == t.name)) {
        let mut tv = TargetVerify { name: t.name.clone(), error: None, pool: None, datasets: Vec::new() };
        let answers = Session::connect(t).and_then(|mut s| {
            let listing = s.list(&datasets)?;
            let health = s.health()?;
            s.close();
            Ok((listing, health))
        });
        let (listing, (pool, health, last_scrub)) = match answers {
            Ok(a) => a,
            Err(e) => {
                let msg = format!("target {}: {e}", t.name);
                eprintln!("zoffsite: {msg}");
                tv.error = Some(msg);
                exit = exit.max(Exit::Target);
                out.push(tv);
                continue;
            }
        };
        let pc = verify::check_pool(&pool, &health, last_scrub, now);
        for p in &pc.problems {
            eprintln!("zoffsite: target {}: {p}", t.name);
            exit = exit.max(Exit::Partial);
        }
        for w in &pc.warnings {
            eprintln!("zoffsite: warning: target {}: {w}", t.name);
        }
        for ds in &datasets {
            let source: Vec<_> = snaps.iter().filter(|s| s.snapshot.dataset == *ds).cloned().collect();
            let confirmed = holds::base(&bases, &t.name, ds);
            let c = verify::check_dataset(ds, &source, confirmed, listing.get(ds));
            if !args.json {
                let state = if c.problems.is_empty() { "ok" } else { "MISMATCH" };
                println!("{}: {ds}: {state}, {} snapshot(s) match the source by GUID", t.name, c.matched);
            }
            for p in &c.problems {
                eprintln!("zoffsite: target {}: {ds}: {p}", t.name);
                exit = exit.max(Exit::Partial);
            }
            tv.datasets.push(c);
        }
        if !args.json {
            let scrub = last_scrub.map_or("never".to_owned(), |s| {
                jiff::Timestamp::from_second(s).map_or_else(|_| s.to_string(), |t| t.to_string())
            });
            println!("{}: pool {pool}: {health}, last scrub finished {scrub}", t.name);
        }
        tv.pool = Some(pc);
        out.push(tv);
    }
    if args.json {
        let doc = serde_json::json!({ "targets": out, "exit_code": exit.code() });
        println!("{}", serde_json::to_string_pretty(&doc).expect("serializes"));
    }
    exit
}
