//! `wfpipe dag`: the instance graph as Graphviz dot, Mermaid, or indented text.

use std::fmt::Write;

use crate::cache::Cache;
use crate::pipeline::Pipeline;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DagFormat {
    Dot,
    Mermaid,
    Text,
}

pub fn render(p: &Pipeline, cache: &Cache, format: DagFormat) -> String {
    let mut out = String::new();
    let cached = |i: usize| cache.is_cached(&p.instances[i].key);
    match format {
        DagFormat::Dot => {
            let _ = writeln!(out, "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];", p.name);
            for (i, inst) in p.instances.iter().enumerate() {
                let style = if cached(i) { ", style=filled, fillcolor=\"#d9f2d9\"" } else { "" };
                let _ = writeln!(out, "  n{i} [label=\"{}\\n{}\"{style}];", inst.id.replace('"', "\\\""), inst.spec.kind);
            }
            for (i, inst) in p.instances.iter().enumerate() {
                for (param, ups) in &inst.inputs {
                    for u in ups {
                        let _ = writeln!(out, "  n{u} -> n{i} [label=\"{param}\"];");
                    }
                }
            }
            out.push_str("}\n");
        }
        DagFormat::Mermaid => {
            out.push_str("flowchart LR\n");
            for (i, inst) in p.instances.iter().enumerate() {
                let _ = writeln!(out, "  n{i}[\"{}<br/>{}\"]", inst.id.replace('"', "'"), inst.spec.kind);
                if cached(i) {
                    let _ = writeln!(out, "  class n{i} cached");
                }
            }
            for (i, inst) in p.instances.iter().enumerate() {
                for (param, ups) in &inst.inputs {
                    for u in ups {
                        let _ = writeln!(out, "  n{u} -->|{param}| n{i}");
                    }
                }
            }
            out.push_str("  classDef cached fill:#d9f2d9\n");
        }
        DagFormat::Text => {
            for (i, inst) in p.instances.iter().enumerate() {
                let mark = if cached(i) { "[cached]" } else { "[to run]" };
                let _ = writeln!(out, "{} ({}) {mark}", inst.id, inst.spec.kind);
                for (param, ups) in &inst.inputs {
                    for &u in ups {
                        let _ = writeln!(out, "    <- {param}: {}", p.instances[u].id);
                    }
                }
            }
        }
    }
    out
}
