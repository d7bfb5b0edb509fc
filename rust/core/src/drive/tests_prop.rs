//! A property test: random plans (chains, parallel blocks, maps, branches, loops, retried steps)
//! driven in either mode and crashed after random commits (before or after the handed-out steps
//! ran, never settled) end as an uninterrupted run does, and record each completed step once.

use std::collections::HashSet;

use proptest::prelude::*;
use serde_json::json;

use super::tests::{completions, plan_with, policy, seq, step, End, World};
use super::*;
use crate::codec::decode_header;
use crate::plan::NodeSpec;
use crate::store::Store;

fn arb_node(depth: u32) -> BoxedStrategy<NodeSpec> {
    let leaf = (0u32..4).prop_map(step).boxed();
    leaf.prop_recursive(depth, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 1..5).prop_map(seq),
            proptest::collection::vec(inner.clone(), 1..4).prop_map(|c| NodeSpec::Parallel { children: c }),
            (inner.clone(), proptest::option::of(1u32..3))
                .prop_map(|(b, c)| NodeSpec::Map { body: Box::new(b), concurrency: c }),
            (inner.clone(), proptest::option::of(inner.clone())).prop_map(|(t, o)| NodeSpec::Branch {
                cond: 0,
                then: Box::new(t),
                otherwise: o.map(Box::new)
            }),
            (inner, 1u32..4).prop_map(|(b, m)| NodeSpec::Loop { body: Box::new(b), until: 0, max_iterations: Some(m) }),
        ]
    })
    .boxed()
}

/// The world for one case: steps 1 and 3 run beside others, 0 and 2 alone.
fn world(root: &NodeSpec, mode: Mode, flaky: Option<u64>) -> World {
    // five attempts: one flaky failure and two interruptions at most
    let p = plan_with(seq(vec![root.clone()]), 4, policy(5, 1.0), None, None, None);
    let mut w = World::new(p, mode);
    w.concurrent = |s| s % 2 == 1;
    w.flaky = flaky;
    w
}

/// The stored end: status and encoded output.
fn stored_end(w: &mut World) -> (Status, Option<Vec<u8>>) {
    let s = w.store.get(&w.id).unwrap().unwrap();
    (s.meta.status, decode_header(&s.header).unwrap().output)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn crashes_after_any_commits_end_as_an_uninterrupted_run(
        root in arb_node(3),
        input in 0i64..40,
        concurrent in any::<bool>(),
        flaky in proptest::option::of(2u64..4),
        crashes in proptest::collection::btree_set(1usize..25, 0..3),
        mid_run in any::<bool>(),
    ) {
        let mode = if concurrent { Mode::Concurrent } else { Mode::Sequential };
        let mut whole = world(&root, mode, flaky);
        let d = whole.start(json!(input), true);
        whole.run_to_end(d);
        let expect = stored_end(&mut whole);
        prop_assert!(expect.0.is_finished());

        let mut w = world(&root, mode, flaky);
        w.crash_at = crashes.iter().copied().collect();
        w.crash_mid_run = mid_run;
        let mut d = w.start(json!(input), true);
        loop {
            // the steps completed in the store when this driver started never run again
            let done_before: HashSet<String> = completions(&w.log()).into_keys().collect();
            w.executions.clear();
            let (_, end) = w.run(d, true);
            for key in &done_before {
                prop_assert!(!w.executions.contains_key(key), "completed step {} ran again", key);
            }
            if end == End::Done || w.meta().status.is_finished() {
                break;
            }
            prop_assert_eq!(end, End::Crashed);
            d = w.load();
        }
        prop_assert_eq!(stored_end(&mut w), expect);
        for (key, n) in completions(&w.log()) {
            prop_assert_eq!(n, 1, "step {} completed {} times in the log", key, n);
        }
        prop_assert_eq!(completions(&w.log()).len(), completions(&whole.log()).len());
    }
}
