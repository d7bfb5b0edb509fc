//! Tests of the outline (identity of a plan) and of the diff a `VersionMismatch` reports.

use super::*;
use crate::outline::{decode, encode};
use crate::plan::{NextSpec, NodeSpec, PlanSpec, StateSpec, StepSpec};
use proptest::prelude::*;

fn spec(steps: &[&str], fns: &[&str], root: NodeSpec) -> PlanSpec {
    PlanSpec {
        name: "checkout".into(),
        version: None,
        steps: steps.iter().map(|n| StepSpec { name: (*n).into(), retry: None, timeout: None }).collect(),
        fns: fns.iter().map(|f| (*f).into()).collect(),
        root,
        timeout: None,
        compensation: None,
    }
}

fn plan(steps: &[&str], fns: &[&str], root: NodeSpec) -> Plan {
    Plan::from_spec(spec(steps, fns, root)).expect("valid plan")
}

fn step(i: u32) -> NodeSpec {
    NodeSpec::Step { step: i }
}

fn seq(children: Vec<NodeSpec>) -> NodeSpec {
    NodeSpec::Seq { children }
}

fn branch(cond: u32, then: NodeSpec) -> NodeSpec {
    NodeSpec::Branch { cond, then: Box::new(then), otherwise: None }
}

fn difference(old: &Plan, new: &Plan) -> Option<String> {
    diff(&decode(&old.outline).unwrap(), &decode(&new.outline).unwrap()).map(|d| d.to_string())
}

#[test]
fn a_renamed_condition_is_named_at_its_position() {
    let old = plan(&["a", "b", "c"], &["is_big"], seq(vec![step(0), step(1), branch(0, step(2))]));
    let new = plan(&["a", "b", "c"], &["is_large"], seq(vec![step(0), step(1), branch(0, step(2))]));
    assert_ne!(old.hash, new.hash);
    assert_eq!(
        difference(&old, &new).unwrap(),
        r#"at position 2: branch condition "is_big" (stored) vs branch condition "is_large" (registered)"#
    );
    assert_eq!(
        explain(Some(&old.outline), &new),
        r#"they differ at position 2: branch condition "is_big" (stored) vs branch condition "is_large" (registered)"#
    );
}

#[test]
fn nested_positions_use_the_notation_of_position_keys() {
    let par = |s: u32| NodeSpec::Parallel { children: vec![step(0), step(s)] };
    let map = |s: u32| NodeSpec::Map { body: Box::new(par(s)), concurrency: None };
    let old = plan(&["a", "b", "c"], &["f"], seq(vec![step(0), branch(0, map(1))]));
    let new = plan(&["a", "b", "c"], &["f"], seq(vec![step(0), branch(0, map(2))]));
    assert_eq!(difference(&old, &new).unwrap(), r#"at position 1.t.m*.p1: step "b" (stored) vs step "c" (registered)"#);
}

#[test]
fn an_added_or_removed_node_is_nothing_on_the_other_side() {
    let old = plan(&["a", "b"], &[], seq(vec![step(0)]));
    let new = plan(&["a", "b"], &[], seq(vec![step(0), step(1)]));
    assert_eq!(difference(&old, &new).unwrap(), r#"at position 1: nothing (stored) vs step "b" (registered)"#);
    assert_eq!(difference(&new, &old).unwrap(), r#"at position 1: step "b" (stored) vs nothing (registered)"#);
    let with_else =
        |o: Option<NodeSpec>| NodeSpec::Branch { cond: 0, then: Box::new(step(0)), otherwise: o.map(Box::new) };
    let old = plan(&["a", "b"], &["f"], seq(vec![with_else(None)]));
    let new = plan(&["a", "b"], &["f"], seq(vec![with_else(Some(step(1)))]));
    assert_eq!(difference(&old, &new).unwrap(), r#"at position 0.f: nothing (stored) vs step "b" (registered)"#);
}

#[test]
fn a_changed_kind_is_reported_at_the_root() {
    let states =
        NodeSpec::States { start: "a".into(), states: vec![StateSpec { name: "a".into(), body: step(0), next: None }] };
    let old = plan(&["a"], &[], seq(vec![step(0)]));
    let new = plan(&["a"], &[], states);
    assert_eq!(
        difference(&old, &new).unwrap(),
        r#"at the root: a sequence (stored) vs a state machine starting at "a" (registered)"#
    );
}

#[test]
fn state_transitions_and_routers_are_named() {
    let machine = |router: &str, second: &str| {
        let root = NodeSpec::States {
            start: "a".into(),
            states: vec![
                StateSpec {
                    name: "a".into(),
                    body: step(0),
                    next: Some(NextSpec::Router { router: 0, targets: Some(vec![second.into()]) }),
                },
                StateSpec { name: second.into(), body: step(0), next: None },
            ],
        };
        plan(&["a"], &[router], root)
    };
    assert_eq!(
        difference(&machine("route", "b"), &machine("pick", "b")).unwrap(),
        r#"at position a#*: state "a" going where router "route" says (one of "b") (stored) vs state "a" going where router "pick" says (one of "b") (registered)"#
    );
    assert_eq!(
        difference(&machine("route", "b"), &machine("route", "c")).unwrap().split(": ").next().unwrap(),
        "at position a#*"
    );
}

#[test]
fn the_hash_ignores_how_the_tables_are_laid_out() {
    // the same names at the same positions: one function used twice, or two functions of one name
    let once = plan(&["a", "b"], &["<lambda>"], seq(vec![branch(0, step(0)), branch(0, step(1))]));
    let twice = plan(&["b", "a"], &["<lambda>", "<lambda>"], seq(vec![branch(0, step(1)), branch(1, step(0))]));
    assert_eq!(once.hash, twice.hash);
    assert_eq!(once.outline, twice.outline);
}

#[test]
fn tuning_does_not_move_the_hash_but_names_do() {
    let base = plan(&["a"], &[], seq(vec![step(0)]));
    let mut tuned = spec(&["a"], &[], seq(vec![step(0)]));
    tuned.steps[0].timeout = Some(3.0);
    tuned.timeout = Some(60.0);
    tuned.version = Some("2".into());
    assert_eq!(Plan::from_spec(tuned).unwrap().hash, base.hash);
    let mut renamed = spec(&["a"], &[], seq(vec![step(0)]));
    renamed.name = "other".into();
    assert_ne!(Plan::from_spec(renamed).unwrap().hash, base.hash);
}

#[test]
fn headers_without_an_outline_or_with_a_bad_one_are_explained() {
    let new = plan(&["a"], &[], seq(vec![step(0)]));
    assert!(explain(None, &new).contains("older tideflow build"));
    assert!(explain(Some(&[9, 0]), &new).contains("cannot be compared (corrupt checkpoint: plan outline: format 9"));
    let mut truncated = new.outline.clone();
    truncated.pop();
    assert!(decode(&truncated).is_err());
    assert!(decode(&[]).is_err());
}

#[test]
fn a_deep_nesting_in_stored_bytes_is_rejected_not_followed() {
    let mut b = vec![1, 1, 1, b'a'];
    b.extend(std::iter::repeat_n([8u8, 0], 100_000).flatten()); // sub-workflow in sub-workflow ...
    b.extend([1, 0]);
    assert!(decode(&b).is_err());
}

fn shapes() -> impl Strategy<Value = NodeSpec> {
    let leaf = prop_oneof![
        (0u32..2).prop_map(step),
        (1u32..3).prop_map(|s| NodeSpec::Sleep { seconds: Some(f64::from(s)), until: None }),
        prop_oneof![Just("go"), Just("stop")].prop_map(|n| NodeSpec::WaitSignal {
            name: n.into(),
            wait: 0,
            timeout: None,
            on_timeout: None
        }),
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 1..3).prop_map(seq),
            proptest::collection::vec(inner.clone(), 1..3).prop_map(|c| NodeSpec::Parallel { children: c }),
            (0u32..2, inner.clone(), proptest::option::of(inner.clone())).prop_map(|(c, t, o)| NodeSpec::Branch {
                cond: c,
                then: Box::new(t),
                otherwise: o.map(Box::new)
            }),
            (0u32..2, 1u32..3, inner.clone()).prop_map(|(u, m, b)| NodeSpec::Loop {
                body: Box::new(b),
                until: u,
                max_iterations: Some(m)
            }),
            (proptest::option::of(1u32..3), inner.clone())
                .prop_map(|(c, b)| NodeSpec::Map { body: Box::new(b), concurrency: c }),
            (prop_oneof![Just("pay"), Just("ship")], inner)
                .prop_map(|(w, b)| NodeSpec::Sub { workflow: w.into(), body: Box::new(b) }),
        ]
    })
}

proptest! {
    /// Two plans have the same hash exactly when the diff finds nothing, and the outline always
    /// decodes: a `VersionMismatch` can always say where the plans differ.
    #[test]
    fn equal_hashes_exactly_when_no_difference(a in shapes(), b in shapes(), fa in 0usize..2, fb in 0usize..2) {
        let names = [["is_big", "done"], ["is_large", "done"]];
        let (pa, pb) = (plan(&["a", "b"], &names[fa], a), plan(&["a", "b"], &names[fb], b));
        let (sa, sb) = (decode(&pa.outline).unwrap(), decode(&pb.outline).unwrap());
        prop_assert_eq!(encode(&pa), pa.outline.clone());
        prop_assert_eq!(pa.hash == pb.hash, diff(&sa, &sb).is_none());
        prop_assert_eq!(diff(&sa, &sb).is_none(), diff(&sb, &sa).is_none());
    }
}
