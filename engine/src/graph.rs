//! The task graph of a DAG (petgraph): cycle detection with the whole path, topological order,
//! upstream sets, and the DOT and Mermaid renderings behind `flowctl graph`.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

/// Which tasks are upstream of which, for every task of a DAG (see [`TaskGraph::ancestry`]).
#[derive(Debug, Clone)]
pub struct Ancestry {
    index: HashMap<String, usize>,
    bits: Vec<Vec<u64>>,
}

impl Ancestry {
    /// Whether `upstream` is upstream of `task`, directly or not.
    pub fn is_upstream(&self, upstream: &str, task: &str) -> bool {
        match (self.index.get(upstream), self.index.get(task)) {
            (Some(&u), Some(&t)) => self.bits[t][u / 64] & (1 << (u % 64)) != 0,
            _ => false,
        }
    }
}

/// Tasks as nodes (their ids), dependencies as edges from upstream to downstream.
#[derive(Debug, Clone, Default)]
pub struct TaskGraph {
    graph: DiGraph<String, ()>,
    index: HashMap<String, NodeIndex>,
}

impl TaskGraph {
    /// Builds the graph from `(task, depends_on)` pairs. Dependencies on unknown tasks are left
    /// out: compile reports them separately.
    pub fn new<'a>(tasks: impl IntoIterator<Item = (&'a str, &'a [String])> + Clone) -> Self {
        let mut graph = DiGraph::new();
        let mut index = HashMap::new();
        for (id, _) in tasks.clone() {
            index.entry(id.to_string()).or_insert_with(|| graph.add_node(id.to_string()));
        }
        for (id, upstream) in tasks {
            for up in upstream {
                if let (Some(&from), Some(&to)) = (index.get(up.as_str()), index.get(id)) {
                    graph.update_edge(from, to, ());
                }
            }
        }
        TaskGraph { graph, index }
    }

    /// Each cycle as a path that returns to its start: `["a", "b", "c", "a"]`. Self-loops are
    /// included as `["a", "a"]`.
    pub fn cycles(&self) -> Vec<Vec<String>> {
        let mut cycles = Vec::new();
        for component in tarjan_scc(&self.graph) {
            let start = *component.iter().min().unwrap_or(&NodeIndex::new(0));
            let is_cycle = component.len() > 1 || self.graph.contains_edge(start, start);
            if !is_cycle {
                continue;
            }
            let members: BTreeSet<NodeIndex> = component.into_iter().collect();
            let mut path = vec![start];
            let mut seen = BTreeSet::from([start]);
            // Walk inside the component; every node in it reaches `start`, so the walk closes.
            'walk: loop {
                let here = *path.last().unwrap_or(&start);
                let mut next_nodes: Vec<NodeIndex> =
                    self.graph.neighbors_directed(here, Direction::Outgoing).filter(|n| members.contains(n)).collect();
                next_nodes.sort();
                if next_nodes.contains(&start) {
                    path.push(start);
                    break 'walk;
                }
                match next_nodes.into_iter().find(|n| !seen.contains(n)) {
                    Some(n) => {
                        seen.insert(n);
                        path.push(n);
                    }
                    None => {
                        // Dead end inside the component: back up and try another branch.
                        path.pop();
                        if path.is_empty() {
                            break 'walk;
                        }
                    }
                }
            }
            cycles.push(path.into_iter().map(|n| self.graph[n].clone()).collect());
        }
        cycles
    }

    /// Every task's upstream set at once, as bit sets built in topological order: a few
    /// operations per dependency however long the chains, where [`TaskGraph::ancestors`] per task
    /// would cost the square of the DAG's size for a chain of thousands of tasks. `None` when there
    /// is a cycle.
    pub fn ancestry(&self) -> Option<Ancestry> {
        let order = toposort(&self.graph, None).ok()?;
        let words = self.graph.node_count().div_ceil(64);
        let mut bits = vec![vec![0u64; words]; self.graph.node_count()];
        for node in order {
            for up in self.graph.neighbors_directed(node, Direction::Incoming) {
                let (u, n) = (up.index(), node.index());
                // Upstream nodes come first in the order, so their sets are complete here.
                let inherited = std::mem::take(&mut bits[u]);
                for (word, from) in bits[n].iter_mut().zip(&inherited) {
                    *word |= from;
                }
                bits[n][u / 64] |= 1 << (u % 64);
                bits[u] = inherited;
            }
        }
        Some(Ancestry { index: self.index.iter().map(|(id, n)| (id.clone(), n.index())).collect(), bits })
    }

    /// Task ids in an order where each task comes after its upstream tasks; ties keep the order
    /// tasks were added in. `None` when there is a cycle.
    pub fn topological_order(&self) -> Option<Vec<String>> {
        let _ = toposort(&self.graph, None).ok()?;
        // Kahn's algorithm over node indices keeps file order among independent tasks, which makes
        // `graph` and `status` output stable.
        let mut indegree: Vec<usize> =
            self.graph.node_indices().map(|n| self.graph.neighbors_directed(n, Direction::Incoming).count()).collect();
        let mut ready: BTreeSet<NodeIndex> = self.graph.node_indices().filter(|n| indegree[n.index()] == 0).collect();
        let mut order = Vec::with_capacity(indegree.len());
        while let Some(n) = ready.pop_first() {
            order.push(self.graph[n].clone());
            for down in self.graph.neighbors_directed(n, Direction::Outgoing) {
                indegree[down.index()] -= 1;
                if indegree[down.index()] == 0 {
                    ready.insert(down);
                }
            }
        }
        Some(order)
    }

    /// Every task upstream of `id`, directly or not.
    pub fn ancestors(&self, id: &str) -> BTreeSet<String> {
        self.reach(id, Direction::Incoming)
    }

    /// Every task downstream of `id`, directly or not.
    pub fn descendants(&self, id: &str) -> BTreeSet<String> {
        self.reach(id, Direction::Outgoing)
    }

    fn reach(&self, id: &str, direction: Direction) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        let Some(&start) = self.index.get(id) else { return found };
        let mut stack = vec![start];
        let mut seen = vec![false; self.graph.node_count()];
        while let Some(n) = stack.pop() {
            for next in self.graph.neighbors_directed(n, direction) {
                if !seen[next.index()] {
                    seen[next.index()] = true;
                    found.insert(self.graph[next].clone());
                    stack.push(next);
                }
            }
        }
        found
    }

    /// The direct downstream tasks of `id`.
    pub fn downstream(&self, id: &str) -> Vec<String> {
        self.index
            .get(id)
            .map(|&n| self.graph.neighbors_directed(n, Direction::Outgoing).map(|d| self.graph[d].clone()).collect())
            .unwrap_or_default()
    }

    /// Graphviz DOT, left to right, each node labelled with its task id and operator.
    pub fn to_dot(&self, dag_id: &str, operator_of: impl Fn(&str) -> String) -> String {
        let mut out = format!("digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, style=rounded];\n", escape(dag_id));
        for n in self.graph.node_indices() {
            let id = &self.graph[n];
            let _ = writeln!(out, "  \"{}\" [label=\"{}\\n{}\"];", escape(id), escape(id), escape(&operator_of(id)));
        }
        for e in self.graph.edge_indices() {
            if let Some((a, b)) = self.graph.edge_endpoints(e) {
                let _ = writeln!(out, "  \"{}\" -> \"{}\";", escape(&self.graph[a]), escape(&self.graph[b]));
            }
        }
        out.push_str("}\n");
        out
    }

    /// A Mermaid flowchart. Node ids are `t0, t1...` because Mermaid reads `-` in ids as edges.
    pub fn to_mermaid(&self, operator_of: impl Fn(&str) -> String) -> String {
        let mut out = String::from("flowchart LR\n");
        for n in self.graph.node_indices() {
            let id = &self.graph[n];
            let _ = writeln!(out, "  t{}[\"{} ({})\"]", n.index(), id.replace('"', "#quot;"), operator_of(id));
        }
        for e in self.graph.edge_indices() {
            if let Some((a, b)) = self.graph.edge_endpoints(e) {
                let _ = writeln!(out, "  t{} --> t{}", a.index(), b.index());
            }
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> TaskGraph {
        let owned: Vec<(String, Vec<String>)> =
            edges.iter().map(|(t, deps)| (t.to_string(), deps.iter().map(|d| d.to_string()).collect())).collect();
        TaskGraph::new(owned.iter().map(|(t, d)| (t.as_str(), d.as_slice())))
    }

    #[test]
    fn finds_the_whole_cycle_path() {
        let g = graph(&[("a", &["c"]), ("b", &["a"]), ("c", &["b"]), ("d", &[])]);
        assert_eq!(g.cycles(), vec![vec!["a", "b", "c", "a"]]);
        assert!(g.topological_order().is_none());
    }

    #[test]
    fn topological_order_keeps_file_order_for_ties() {
        let g = graph(&[("z", &[]), ("y", &["z"]), ("x", &[]), ("w", &["y", "x"])]);
        assert_eq!(g.topological_order().unwrap(), ["z", "y", "x", "w"]);
        assert_eq!(g.ancestors("w"), BTreeSet::from(["x".into(), "y".into(), "z".into()]));
        assert_eq!(g.descendants("z"), BTreeSet::from(["w".into(), "y".into()]));
    }

    #[test]
    fn ancestry_agrees_with_ancestors_and_is_quick_on_long_chains() {
        let g = graph(&[("z", &[]), ("y", &["z"]), ("x", &[]), ("w", &["y", "x"]), ("v", &[])]);
        let ancestry = g.ancestry().unwrap();
        for task in ["z", "y", "x", "w", "v"] {
            for up in ["z", "y", "x", "w", "v"] {
                assert_eq!(ancestry.is_upstream(up, task), g.ancestors(task).contains(up), "{up} upstream of {task}");
            }
        }
        assert!(!ancestry.is_upstream("nope", "w"));
        let cyclic = graph(&[("a", &["b"]), ("b", &["a"])]);
        assert!(cyclic.ancestry().is_none());
        // A chain of 10,000 tasks: every task sees all the ones before it.
        let ids: Vec<String> = (0..10_000).map(|i| format!("t{i}")).collect();
        let deps: Vec<Vec<String>> = (0..10_000).map(|i| if i == 0 { vec![] } else { vec![ids[i - 1].clone()] }).collect();
        let chain = TaskGraph::new(ids.iter().map(String::as_str).zip(deps.iter().map(Vec::as_slice)));
        let started = std::time::Instant::now();
        let ancestry = chain.ancestry().unwrap();
        assert!(ancestry.is_upstream("t0", "t9999") && !ancestry.is_upstream("t9999", "t0"));
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
    }

    #[test]
    fn renders_dot_and_mermaid() {
        let g = graph(&[("extract", &[]), ("load", &["extract"])]);
        let dot = g.to_dot("d", |_| "shell".into());
        assert!(dot.contains("\"extract\" -> \"load\";"), "{dot}");
        let mermaid = g.to_mermaid(|_| "shell".into());
        assert_eq!(mermaid, "flowchart LR\n  t0[\"extract (shell)\"]\n  t1[\"load (shell)\"]\n  t0 --> t1\n");
    }
}
