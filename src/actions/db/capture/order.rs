//! The target's foreign keys and the order a batch is applied in when they stay live (a target
//! whose role may not set `session_replication_role`, as Heroku's): parents before their
//! children for the rows that land, children before their parents for the rows that go.
//!
//! The foreign keys are read once per step from the target's `pg_constraint` (`contype = 'f'`,
//! between plain tables and partitions: a key declared on a partitioned table is there once per
//! partition, and those are the tables the log names). A cycle between two or more tables
//! (`a → b → a`) has no such order: it is applied only when every foreign key among the tables
//! of the cycle is DEFERRABLE (then checked at the batch's commit), and named otherwise before
//! anything is written. A table referencing itself is not a cycle: see `Plan::defer`.

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::Client;

use crate::actions::db::common::{col, query};
use crate::actions::Outcome;

/// One foreign key of the target: `child (child_cols) REFERENCES parent (parent_cols)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ForeignKey {
    pub name: String,
    pub child: String,
    pub parent: String,
    pub child_cols: Vec<String>,
    pub parent_cols: Vec<String>,
    pub deferrable: bool,
    /// The child has an index whose leading columns are the key's (a lookup of the children
    /// of a parent's rows does not scan the child).
    pub indexed: bool,
}

/// Every foreign key of the target between plain tables (partitions included), each table
/// named as the log names it (`format('%I.%I')`).
pub(super) async fn foreign_keys(target: &Client) -> Result<Vec<ForeignKey>, Outcome> {
    let rows = query(
        target,
        "SELECT c.conname::text, format('%I.%I', cn.nspname, cr.relname), \
                format('%I.%I', pn.nspname, pr.relname), \
                (SELECT array_agg(a.attname::text ORDER BY k.ord) \
                   FROM unnest(c.conkey) WITH ORDINALITY k(n, ord) \
                   JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n), \
                (SELECT array_agg(a.attname::text ORDER BY k.ord) \
                   FROM unnest(c.confkey) WITH ORDINALITY k(n, ord) \
                   JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n), \
                c.condeferrable, \
                EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.conrelid AND i.indisvalid \
                           AND i.indpred IS NULL AND cardinality(c.conkey) <= i.indnkeyatts \
                           AND (SELECT array_agg(x.n) FROM unnest(i.indkey::int2[]) WITH ORDINALITY x(n, ord) \
                                 WHERE x.ord <= cardinality(c.conkey)) @> c.conkey) \
           FROM pg_constraint c \
           JOIN pg_class cr ON cr.oid = c.conrelid JOIN pg_namespace cn ON cn.oid = cr.relnamespace \
           JOIN pg_class pr ON pr.oid = c.confrelid JOIN pg_namespace pn ON pn.oid = pr.relnamespace \
          WHERE c.contype = 'f' AND cr.relkind = 'r' AND pr.relkind = 'r' \
          ORDER BY 2, 3, 1",
        "reading the target's foreign keys",
    )
    .await?;
    let mut out = Vec::new();
    for row in &rows {
        out.push(ForeignKey {
            name: col(row, 0)?,
            child: col(row, 1)?,
            parent: col(row, 2)?,
            child_cols: col(row, 3)?,
            parent_cols: col(row, 4)?,
            deferrable: col(row, 5)?,
            indexed: col(row, 6)?,
        });
    }
    Ok(out)
}

/// The order a batch's tables are written in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Plan {
    /// Parents first: the order the rows that land are written in; reversed, the order the
    /// rows that go are deleted in.
    pub tables: Vec<String>,
    /// `SET CONSTRAINTS ALL DEFERRED` in the batch's transaction: the tables form a cycle whose
    /// foreign keys are all DEFERRABLE, or a table references itself through a DEFERRABLE key.
    /// A table referencing itself through a key that is not DEFERRABLE has its rows written in
    /// one statement (and deleted in one): PostgreSQL checks a foreign key that is not deferred
    /// at the end of the statement (its checks are AFTER triggers queued for the statement), so
    /// a row may reference another row of the same statement whatever their order — the test
    /// `a_self_reference_holds_at_the_end_of_one_statement` (tests/db.rs) checks that claim.
    pub defer: bool,
    /// What the plan relies on, for the step's log.
    pub notes: Vec<String>,
}

/// Orders `tables` by the foreign keys among them; a cycle that cannot be deferred is an
/// error naming it.
pub(super) fn plan(tables: &BTreeSet<String>, keys: &[ForeignKey]) -> Result<Plan, Outcome> {
    let among: Vec<&ForeignKey> = keys
        .iter()
        .filter(|k| tables.contains(&k.child) && tables.contains(&k.parent))
        .collect();
    // Each table's parents among the batch's tables (itself left out).
    let mut parents: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for k in among.iter().filter(|k| k.child != k.parent) {
        parents
            .entry(k.child.as_str())
            .or_default()
            .insert(k.parent.as_str());
    }
    // A key is on a cycle when its parent leads back to its child.
    let on_cycle = |k: &ForeignKey| -> Option<Vec<String>> {
        if k.child == k.parent {
            return None;
        }
        path(&parents, &k.parent, &k.child).map(|rest| {
            let mut cycle = vec![k.child.clone()];
            cycle.extend(rest);
            cycle
        })
    };
    let mut defer = false;
    let mut notes = Vec::new();
    let mut cyclic: BTreeSet<(&str, &str)> = BTreeSet::new();
    for k in &among {
        let Some(cycle) = on_cycle(k) else {
            continue;
        };
        if !k.deferrable {
            return Err(Outcome::failed(format!(
                "foreign keys form a cycle: {}: the reverse catch-up cannot order it — make one of them DEFERRABLE ({} on {} is not); nothing of this batch was written",
                cycle.join(" → "),
                k.name,
                k.child
            )));
        }
        cyclic.insert((k.child.as_str(), k.parent.as_str()));
        let note = format!(
            "foreign keys form a cycle: {}: all DEFERRABLE, checked at the batch's commit",
            cycle.join(" → ")
        );
        if !defer {
            notes.push(note);
        }
        defer = true;
    }
    // Parents first, by the keys on no cycle (those on a cycle are all deferred).
    let mut order: Vec<String> = Vec::new();
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    while placed.len() < tables.len() {
        let ready: Vec<&str> = tables
            .iter()
            .map(String::as_str)
            .filter(|t| !placed.contains(t))
            .filter(|t| {
                parents.get(t).is_none_or(|ps| {
                    ps.iter()
                        .all(|p| placed.contains(p) || cyclic.contains(&(*t, *p)))
                })
            })
            .collect();
        if ready.is_empty() {
            // Not reached: the keys on no cycle order every table.
            order.extend(
                tables
                    .iter()
                    .filter(|t| !placed.contains(t.as_str()))
                    .cloned(),
            );
            break;
        }
        for t in ready {
            placed.insert(t);
            order.push(t.to_string());
        }
    }
    for k in among.iter().filter(|k| k.child == k.parent) {
        if k.deferrable {
            defer = true;
            notes.push(format!(
                "{} references itself ({}, DEFERRABLE): checked at the batch's commit",
                k.child, k.name
            ));
        } else {
            notes.push(format!(
                "{} references itself ({}): its rows are written in one statement, checked at its end",
                k.child, k.name
            ));
        }
    }
    Ok(Plan {
        tables: order,
        defer,
        notes,
    })
}

/// The tables from `from` to `to` following parents (`from` first), if `to` is reached.
fn path(parents: &BTreeMap<&str, BTreeSet<&str>>, from: &str, to: &str) -> Option<Vec<String>> {
    let mut came: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([from]);
    let mut seen: BTreeSet<&str> = BTreeSet::from([from]);
    while let Some(at) = queue.pop_front() {
        if at == to {
            let mut out = vec![to.to_string()];
            let mut back = to;
            while let Some(prev) = came.get(back) {
                out.push(prev.to_string());
                back = prev;
            }
            out.reverse();
            return Some(out);
        }
        for p in parents.get(at).into_iter().flatten() {
            if seen.insert(p) {
                came.insert(p, at);
                queue.push_back(p);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fk(child: &str, parent: &str, deferrable: bool) -> ForeignKey {
        ForeignKey {
            name: format!("{child}_{parent}_fk"),
            child: child.to_string(),
            parent: parent.to_string(),
            child_cols: vec!["p".to_string()],
            parent_cols: vec!["id".to_string()],
            deferrable,
            indexed: true,
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn parents_come_before_their_children() {
        let keys = [
            fk("public.line", "public.invoice", false),
            fk("public.invoice", "public.customer", false),
            fk("public.line", "public.product", false),
            fk("public.other", "public.elsewhere", false),
        ];
        let plan = plan(
            &set(&[
                "public.line",
                "public.invoice",
                "public.customer",
                "public.product",
            ]),
            &keys,
        )
        .ok()
        .unwrap_or_else(|| unreachable!());
        let at = |t: &str| plan.tables.iter().position(|x| x == t);
        assert!(at("public.customer") < at("public.invoice"));
        assert!(at("public.invoice") < at("public.line"));
        assert!(at("public.product") < at("public.line"));
        assert_eq!(plan.tables.len(), 4);
        assert!(!plan.defer);
    }

    #[test]
    fn a_cycle_is_named_unless_deferrable() {
        let keys = [
            fk("public.a", "public.b", false),
            fk("public.b", "public.a", true),
            fk("public.c", "public.a", false),
        ];
        let Err(Outcome::Failed { reason, .. }) =
            plan(&set(&["public.a", "public.b", "public.c"]), &keys)
        else {
            unreachable!("a cycle was not refused");
        };
        assert!(
            reason.contains("foreign keys form a cycle: public.a → public.b → public.a"),
            "{reason}"
        );
        let keys = [
            fk("public.a", "public.b", true),
            fk("public.b", "public.a", true),
        ];
        let plan = plan(&set(&["public.a", "public.b"]), &keys)
            .ok()
            .unwrap_or_else(|| unreachable!());
        assert!(plan.defer);
        assert_eq!(plan.tables.len(), 2);
        // A child of a deferrable cycle, by a key that is not: no cycle of its own, after it.
        let keys = [
            fk("public.a", "public.b", true),
            fk("public.b", "public.a", true),
            fk("public.0child", "public.a", false),
        ];
        let plan = super::plan(&set(&["public.a", "public.b", "public.0child"]), &keys)
            .ok()
            .unwrap_or_else(|| unreachable!());
        assert!(plan.defer);
        let at = |t: &str| plan.tables.iter().position(|x| x == t);
        assert!(at("public.a") < at("public.0child"), "{:?}", plan.tables);
    }

    #[test]
    fn a_self_reference_is_not_a_cycle() {
        let keys = [
            fk("public.node", "public.node", false),
            fk("public.leaf", "public.node", false),
        ];
        let plan = plan(&set(&["public.node", "public.leaf"]), &keys)
            .ok()
            .unwrap_or_else(|| unreachable!());
        assert_eq!(plan.tables, vec!["public.node", "public.leaf"]);
        assert!(!plan.defer);
        assert!(plan.notes[0].contains("one statement"), "{:?}", plan.notes);
    }
}
