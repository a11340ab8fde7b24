//! The `needs` graph between steps: transitive needs and cycles.

use std::collections::{BTreeSet, HashMap};

use super::Step;

/// Every step `id` needs, directly or through other steps, in runbook order.
pub(crate) fn transitive_needs(steps: &[Step], id: &str) -> Vec<String> {
    let by_id: HashMap<&str, &Step> = steps.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&str> = by_id
        .get(id)
        .map_or_else(Vec::new, |s| s.needs.iter().map(String::as_str).collect());
    while let Some(next) = stack.pop() {
        if seen.insert(next.to_string()) {
            if let Some(step) = by_id.get(next) {
                stack.extend(step.needs.iter().map(String::as_str));
            }
        }
    }
    steps
        .iter()
        .filter(|s| seen.contains(&s.id))
        .map(|s| s.id.clone())
        .collect()
}

/// Each dependency cycle once, as the ids along it with the first repeated at the end.
pub(crate) fn cycles(edges: &[(String, Vec<String>)]) -> Vec<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let index: HashMap<&str, usize> = edges
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (id.as_str(), i))
        .collect();
    let mut marks = vec![Mark::New; edges.len()];
    let mut found = Vec::new();
    for start in 0..edges.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next edge to look at); `path` mirrors the open nodes.
        let mut stack = vec![(start, 0usize)];
        let mut path = vec![start];
        marks[start] = Mark::Open;
        while let Some((node, edge)) = stack.last_mut() {
            let node = *node;
            if let Some(target) = edges[node].1.get(*edge) {
                *edge += 1;
                let Some(&t) = index.get(target.as_str()) else {
                    continue;
                };
                match marks[t] {
                    Mark::New => {
                        marks[t] = Mark::Open;
                        stack.push((t, 0));
                        path.push(t);
                    }
                    Mark::Open => {
                        let from = path.iter().position(|&p| p == t).unwrap_or(0);
                        let mut cycle: Vec<String> =
                            path[from..].iter().map(|&p| edges[p].0.clone()).collect();
                        cycle.push(edges[t].0.clone());
                        found.push(cycle);
                    }
                    Mark::Done => {}
                }
            } else {
                marks[node] = Mark::Done;
                stack.pop();
                path.pop();
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(id: &str, needs: &[&str]) -> (String, Vec<String>) {
        (
            id.to_string(),
            needs.iter().map(|s| s.to_string()).collect(),
        )
    }

    #[test]
    fn finds_cycles_and_ignores_dags() {
        assert!(cycles(&[e("a", &[]), e("b", &["a"]), e("c", &["a", "b"])]).is_empty());
        let found = cycles(&[
            e("a", &["c"]),
            e("b", &["a"]),
            e("c", &["b"]),
            e("d", &["d"]),
        ]);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0], vec!["a", "c", "b", "a"]);
        assert_eq!(found[1], vec!["d", "d"]);
    }
}
