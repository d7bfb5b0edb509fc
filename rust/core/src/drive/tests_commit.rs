//! Commit before run, one commit per step, waves and group commit, and version conflicts.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::json;

use super::tests::{completions, par, plan, plan_with, policy, seq, starts, step, Did, End, World};
use super::*;
use crate::codec::Record;
use crate::plan::NodeSpec;
use crate::store::Store;
use crate::CoreError;

fn sorted(mut v: Vec<(String, u32)>) -> Vec<(String, u32)> {
    v.sort();
    v
}

/// A plan with a chain, a parallel block, a map and a retried step.
fn mixed() -> (Arc<crate::plan::Plan>, HashMap<String, u32>) {
    let map = NodeSpec::Map { body: Box::new(step(1)), concurrency: Some(2) };
    let root = seq(vec![step(0), par(vec![step(1), step(2), step(3)]), map, step(2)]);
    let fails = HashMap::from([("1.p0".to_string(), 1), ("3".to_string(), 2)]);
    (plan_with(root, 4, policy(4, 1.0), None, None, None), fails)
}

/// Every `Run` comes right after the create or commit whose records note the starts of exactly
/// its tasks, and every noted start is handed out right after its commit.
fn assert_commit_before_run(trace: &[Did]) {
    for (i, did) in trace.iter().enumerate() {
        let noted = match did {
            Did::Created(r) | Did::Committed(r, _) => starts(r),
            Did::Ran(tasks) => {
                let before = match i.checked_sub(1).map(|j| &trace[j]) {
                    Some(Did::Created(r)) | Some(Did::Committed(r, _)) => starts(r),
                    other => panic!("run #{i} {tasks:?} not right after a commit but after {other:?}"),
                };
                assert_eq!(sorted(before), sorted(tasks.clone()), "run #{i}: its commit notes other starts");
                continue;
            }
            _ => continue,
        };
        if !noted.is_empty() {
            assert!(
                matches!(trace.get(i + 1), Some(Did::Ran(t)) if sorted(t.clone()) == sorted(noted.clone())),
                "commit #{i} notes {noted:?} but is followed by {:?}",
                trace.get(i + 1)
            );
        }
    }
}

#[test]
fn every_run_follows_the_commit_of_exactly_its_starts() {
    for mode in [Mode::Sequential, Mode::Concurrent] {
        let (p, fails) = mixed();
        let mut w = World::new(p, mode);
        w.fails = fails;
        let d = w.start(json!(3), true);
        let d = w.run_to_end(d);
        assert_eq!(d.inst.status(), Status::Completed, "{mode:?}");
        assert_commit_before_run(&w.trace);
        assert!(w.trace.iter().filter(|t| matches!(t, Did::Ran(_))).count() >= 6, "{mode:?}: {:?}", w.trace);
    }
}

/// The uninterrupted output and number of commits of `mixed` in `mode`.
fn uninterrupted(mode: Mode, mid_run: bool) -> (Option<serde_json::Value>, usize) {
    let (p, fails) = mixed();
    let mut w = World::new(p, mode);
    w.fails = fails;
    w.crash_mid_run = mid_run;
    let d = w.start(json!(3), true);
    let d = w.run_to_end(d);
    (d.inst.output().cloned(), w.commits)
}

#[test]
fn a_crash_after_any_commit_charges_the_interrupted_attempts_and_reruns_no_completed_step() {
    for mode in [Mode::Sequential, Mode::Concurrent] {
        for mid_run in [false, true] {
            let (whole, total) = uninterrupted(mode, mid_run);
            for k in 1..total {
                let ctx = format!("{mode:?}, crash after commit {k}, mid_run {mid_run}");
                let (p, fails) = mixed();
                let mut w = World::new(p, mode);
                w.fails = fails;
                w.crash_mid_run = mid_run;
                w.crash_at = vec![k];
                let d = w.start(json!(3), true);
                let (d, end) = w.run(d, true);
                assert_eq!(end, End::Crashed, "{ctx}");
                let crash_commit = match w.trace.last() {
                    Some(Did::Committed(r, _)) => r.clone(),
                    other => panic!("{ctx}: {other:?}"),
                };
                drop(d);
                let interrupted = starts(&crash_commit);
                let done_before: HashSet<String> = completions(&w.log()).into_keys().collect();
                let mark = w.trace.len();
                w.executions.clear();

                let d = w.load();
                let d = w.run_to_end(d);
                assert_eq!(d.inst.output().cloned(), whole, "{ctx}");
                for key in &done_before {
                    assert!(!w.executions.contains_key(key), "{ctx}: completed step {key} ran again");
                }
                // the attempts whose starts the crash commit noted count: each goes on with the next
                let rerun: Vec<(String, u32)> = w.trace[mark..]
                    .iter()
                    .filter_map(|t| match t {
                        Did::Ran(ts) => Some(ts.clone()),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                for (key, attempt) in &interrupted {
                    let first = rerun.iter().find(|(k, _)| k == key).map(|(_, a)| *a);
                    assert_eq!(first, Some(attempt + 1), "{ctx}: {key} (interrupted at attempt {attempt})");
                }
                for (key, n) in completions(&w.log()) {
                    assert_eq!(n, 1, "{ctx}: {key} completed {n} times in the log");
                }
                assert_commit_before_run(&w.trace[mark..]);
            }
        }
    }
}

#[test]
fn a_task_that_never_started_is_never_charged() {
    // the sync step p2 ends the wave: p3 and p4 stay ready, and a crash then charges only p0..p2
    let root = seq(vec![step(1), par(vec![step(1), step(1), step(0), step(1), step(1)])]);
    let mut w = World::new(plan(root, 2), Mode::Concurrent);
    w.concurrent = |s| s != 0;
    w.crash_at = vec![1];
    let mut d = w.start(json!(2), true);
    assert_eq!(w.drive(&mut d), End::Crashed);
    drop(d);
    let mark = w.trace.len();
    let d = w.load();
    let d = w.run_to_end(d);
    assert_eq!(d.inst.status(), Status::Completed);
    let ran: Vec<(String, u32)> = w.trace[mark..]
        .iter()
        .filter_map(|t| match t {
            Did::Ran(ts) => Some(ts.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let expect: Vec<(String, u32)> =
        vec![("1.p0".into(), 2), ("1.p1".into(), 2), ("1.p2".into(), 2), ("1.p3".into(), 1), ("1.p4".into(), 1)];
    assert_eq!(sorted(ran), expect);
}

#[test]
fn a_thousand_step_chain_costs_one_commit_per_step() {
    let n = 1000;
    let root = seq((0..n).map(|i| step(i % 2)).collect());
    let mut w = World::new(plan(root, 2), Mode::Sequential);
    let d = w.start(json!(1), true);
    let d = w.run_to_end(d);
    assert_eq!(d.inst.status(), Status::Completed);
    assert_eq!(w.commits, n as usize);
    assert_eq!(w.meta().version, n as u64 + 1);
    for t in &w.trace {
        if let Did::Committed(records, _) = t {
            let steps = records.iter().filter(|r| matches!(r, Record::Step(_))).count();
            assert_eq!(steps, 1, "{records:?}");
        }
    }
}

#[test]
fn a_loop_costs_one_commit_per_iteration() {
    // 1 -> 3 -> 7 -> 15 -> 31 -> 63 -> 127 (> 100): six iterations, each check recorded with it
    let l = NodeSpec::Loop { body: Box::new(step(0)), until: 1, max_iterations: Some(50) };
    let mut w = World::new(plan(seq(vec![l]), 1), Mode::Sequential);
    let d = w.start(json!(1), true);
    let d = w.run_to_end(d);
    assert_eq!(d.inst.output(), Some(&json!(127)));
    assert_eq!(w.commits, 6);
    assert_eq!(completions(&w.log()).len(), 6);
}

#[test]
fn a_parallel_block_of_concurrent_steps_is_one_run_after_one_commit() {
    let n = 8;
    let root = seq(vec![step(0), par((0..n).map(|_| step(1)).collect())]);
    let mut w = World::new(plan(root, 2), Mode::Concurrent);
    w.concurrent = |s| s != 0;
    let mut d = w.start(json!(2), true);
    assert_eq!(w.one(&mut d), Did::Ran(vec![("0".into(), 1)]));
    assert_eq!(w.one(&mut d), Did::Waited(None)); // nothing else to do while step 0 runs
    w.settle_inflight(&mut d);
    let Did::Committed(records, Status::Running) = w.one(&mut d) else { panic!("{:?}", w.trace) };
    assert_eq!(starts(&records).len(), n);
    let Did::Ran(tasks) = w.one(&mut d) else { panic!("{:?}", w.trace) };
    assert_eq!(sorted(tasks), sorted((0..n).map(|i| (format!("1.p{i}"), 1)).collect()));
    assert_eq!(w.commits, 1);
}

#[test]
fn a_non_concurrent_step_ends_the_wave_and_those_after_it_stay_ready_and_uncharged() {
    let root = seq(vec![step(1), par(vec![step(1), step(1), step(0), step(1), step(1)])]);
    let mut w = World::new(plan(root, 2), Mode::Concurrent);
    w.concurrent = |s| s != 0;
    let mut d = w.start(json!(2), true);
    w.one(&mut d);
    w.one(&mut d);
    w.settle_inflight(&mut d);
    let Did::Committed(records, _) = w.one(&mut d) else { panic!("{:?}", w.trace) };
    let wave = vec![("1.p0".to_string(), 1), ("1.p1".to_string(), 1), ("1.p2".to_string(), 1)];
    assert_eq!(sorted(starts(&records)), wave, "the sync step p2 ends the wave");
    assert_eq!(w.one(&mut d), Did::Ran(wave));
    assert_eq!(d.inst.ready_len(), 2, "p3 and p4 stay ready");
    assert_eq!(d.inst.running(), 3);

    // group commit: three outcomes and the next wave's starts, in one commit
    w.settle_inflight(&mut d);
    let before = w.commits;
    let Did::Committed(records, _) = w.one(&mut d) else { panic!("{:?}", w.trace) };
    assert_eq!(records.iter().filter(|r| matches!(r, Record::Step(_))).count(), 3);
    assert_eq!(sorted(starts(&records)), vec![("1.p3".to_string(), 1), ("1.p4".to_string(), 1)]);
    assert_eq!(w.one(&mut d), Did::Ran(vec![("1.p3".to_string(), 1), ("1.p4".to_string(), 1)]));
    assert_eq!(w.commits, before + 1);
    w.settle_inflight(&mut d);
    assert!(matches!(w.one(&mut d), Did::Committed(_, Status::Completed)));
    assert_eq!(w.one(&mut d), Did::Done);
}

#[test]
fn settling_several_tasks_then_asking_commits_them_once() {
    let root = par(vec![step(1), step(1), step(1), step(1)]);
    let mut w = World::new(plan(root, 2), Mode::Concurrent);
    let mut d = w.start(json!(2), true);
    let Did::Ran(tasks) = w.one(&mut d) else { panic!() };
    assert_eq!(tasks.len(), 4);
    // two end, the driver asks, then the other two end
    let rest = w.inflight.split_off(2);
    w.settle_inflight(&mut d);
    assert!(matches!(w.one(&mut d), Did::Committed(ref r, Status::Running) if completions(r).len() == 2));
    assert_eq!(w.one(&mut d), Did::Waited(None));
    w.inflight = rest;
    w.settle_inflight(&mut d);
    assert!(matches!(w.one(&mut d), Did::Committed(ref r, Status::Completed) if completions(r).len() == 2));
    assert_eq!(w.one(&mut d), Did::Done);
    assert_eq!(w.commits, 2);
}

#[test]
fn a_commit_overtaken_by_another_writer_is_rejected_and_stores_nothing() {
    let mut w = World::new(plan(seq(vec![step(0), step(1)]), 2), Mode::Sequential);
    drop(w.start(json!(1), false)); // created pending
    let mut mine = w.load();
    let mut theirs = w.load();
    // the other writer takes the first step and commits first
    assert!(matches!(w.one(&mut theirs), Did::Committed(..)));
    let log = w.store.records("i1", 0).unwrap();
    let meta = w.meta();
    let host = &mut w.host;
    let Next::Commit = mine.next(w.now, host, &|_| false) else { panic!("a commit first") };
    let pending = mine.commit().unwrap().clone();
    assert_eq!(pending.expected_version, 1);
    let err = w.store.commit(&pending.as_commit("i1", None)).unwrap_err();
    assert_eq!(err, CoreError::Conflict { instance: "i1".into(), expected: 1, found: 2 });
    assert_eq!(w.store.records("i1", 0).unwrap(), log, "nothing of the rejected commit is stored");
    assert_eq!(w.meta(), meta);
    // still asked for until acknowledged: the driver reloads instead, and goes on from the store
    assert!(matches!(mine.next(w.now, &mut w.host, &|_| false), Next::Commit));
    drop(mine);
    drop(theirs);
    let d = w.load();
    let d = w.run_to_end(d);
    assert_eq!(d.inst.output(), Some(&json!(5))); // 1*2+1 = 3; 3+2 = 5
    assert!(completions(&w.log()).values().all(|n| *n == 1));
}

#[test]
fn committed_hands_back_exactly_the_tasks_it_started_and_only_once() {
    for mode in [Mode::Sequential, Mode::Concurrent] {
        let root = seq(vec![step(0), par(vec![step(1), step(1), step(1)])]);
        let mut w = World::new(plan(root, 2), mode);
        let mut d = w.start(json!(2), true);
        let Some(Did::Ran(_)) = Some(w.one(&mut d)) else { panic!() };
        w.settle_inflight(&mut d);
        let Next::Commit = d.next(w.now, &mut w.host, &|_| true) else { panic!("{mode:?}: a commit") };
        let p = d.commit().unwrap().clone();
        w.store.commit(&p.as_commit("i1", None)).unwrap();
        let tasks = d.committed().expect("the started tasks");
        let got: Vec<(String, u32)> = tasks.iter().map(|t| (t.key.clone(), t.attempt)).collect();
        let decoded = |p: &Pending| -> Vec<Record> {
            p.records.iter().map(|r| crate::codec::decode_record(r).unwrap()).collect()
        };
        assert_eq!(sorted(got.clone()), sorted(starts(&decoded(&p))), "{mode:?}");
        assert_eq!(tasks.len(), if mode == Mode::Sequential { 1 } else { 3 });
        assert_eq!(d.stored().version, 2);
        // not handed out a second time (a sequential driver asking now would start the next one)
        match d.next(w.now, &mut w.host, &|_| true) {
            Next::Run(ts) => panic!("{mode:?}: handed out again: {ts:?}"),
            Next::Commit => {
                let again = starts(&decoded(d.commit().unwrap()));
                assert!(again.iter().all(|s| !got.contains(s)), "{mode:?}: {again:?} after {got:?}");
            }
            _ => assert!(d.committed().is_none()),
        }
    }
}
