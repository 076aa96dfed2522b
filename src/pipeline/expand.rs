//! Sweep expansion: every stage into instances, one per combination of its own axes and
//! of the upstream instances its references select (joined on shared axis names); each
//! instance named, its files digested and its spec keyed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use wfpipe_stages::kind::{unkeyed_defaults, ParamSpec, Params, RefMode, Value};

use super::axes::{combos, matches, Axis, AxisTarget, Combo};
use super::connect::check_connection;
use super::diagnostic::Diagnostic;
use super::{Instance, Pipeline};
use crate::kinds::Registry;
use crate::spec::{InputRef, InstanceSpec};

/// The instance id: `stage` or `stage[a=1,b=x]` with axes sorted by name.
pub fn instance_id(stage: &str, axes: &BTreeMap<String, Value>) -> String {
    if axes.is_empty() {
        return stage.to_owned();
    }
    let parts: Vec<String> = axes.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{stage}[{}]", parts.join(","))
}

/// `own` plus, for names it lacks, the parameters of the upstream instances (breadth
/// first, nearest first): what a FLOP estimate may need to know about its inputs. Only
/// estimates see this view; keys and runs use the instance's own parameters.
fn estimate_view(own: &Params, inputs: &BTreeMap<String, Vec<usize>>, all: &[Instance]) -> Params {
    let mut merged = own.0.clone();
    for i in crate::dag::upstream(all, inputs.values().flatten().copied(), |_| true) {
        for (name, value) in &all[i].spec.params.0 {
            merged.entry(name.clone()).or_insert_with(|| value.clone());
        }
    }
    Params(merged)
}

/// Expand every stage into instances and key them, in topological order.
pub(crate) fn expand(p: &mut Pipeline, registry: &Registry, diags: &mut Vec<Diagnostic>) {
    let stage_index: HashMap<String, usize> = p.stages.iter().enumerate().map(|(i, s)| (s.name.clone(), i)).collect();
    let mut file_digests: HashMap<String, Result<String, String>> = HashMap::new();
    for si in 0..p.stages.len() {
        let kind = registry.get(&p.stages[si].kind).expect("kinds were checked");
        let mut seen_errors = BTreeSet::new();
        let Some(new_instances) = stage_instances(p, si, kind, registry, &stage_index, &mut seen_errors, diags) else {
            continue;
        };
        let specs = kind.params();
        for mut inst in new_instances {
            if !digest_files(p, si, &mut inst, &mut file_digests, &mut seen_errors, diags) {
                continue;
            }
            key_instance(p, si, &specs, &mut inst);
            let idx = p.instances.len();
            p.stages[si].instances.push(idx);
            p.instances.push(inst);
        }
    }
}

/// One upstream instance per fan-out reference (parameter, instance), with the axes the
/// picked instances bring.
type Choice = (BTreeMap<String, Value>, Vec<(String, usize)>);

/// The instances of stage `si`, not yet keyed: every agreeing choice of fan-out inputs
/// times every own combination that survives `exclude`. None (with diagnostics) when the
/// stage cannot be expanded.
#[allow(clippy::too_many_arguments)]
fn stage_instances(
    p: &Pipeline,
    si: usize,
    kind: &dyn wfpipe_stages::kind::StageKind,
    registry: &Registry,
    stage_index: &HashMap<String, usize>,
    seen_errors: &mut BTreeSet<String>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Vec<Instance>> {
    let stage = &p.stages[si];
    let own_names: BTreeSet<&str> = stage.axes.iter().flat_map(|g| g.axes.iter().map(|a| a.name.as_str())).collect();
    // Excludes over own axes only filter own combinations; the others need the inputs' axes.
    let (own_excludes, joint_excludes): (Vec<_>, Vec<_>) =
        stage.exclude.iter().partition(|ex| ex.keys().all(|k| own_names.contains(k.as_str())));
    let own = own_combos(stage, &own_excludes, diags)?;
    let (fanout, gathered) = select_inputs(p, registry, kind, stage, stage_index, diags)?;
    let choices = join_fanout(p, stage, &fanout, diags)?;
    check_joint_axes(stage, &own_names, &choices, &joint_excludes, diags)?;
    let mut out = Vec::new();
    for (inherited, picked) in &choices {
        for combo in &own {
            let full: BTreeMap<String, String> = inherited
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .chain(combo.iter().map(|(a, v)| (a.name.clone(), v.to_string())))
                .collect();
            if joint_excludes.iter().any(|ex| ex.iter().all(|(k, v)| full.get(k) == Some(&v.to_string()))) {
                continue;
            }
            let mut inputs: BTreeMap<String, Vec<usize>> = gathered.clone();
            for (param, idx) in picked {
                inputs.insert(param.clone(), vec![*idx]);
            }
            match new_instance(p, si, kind, inherited.clone(), combo, inputs) {
                Ok(inst) => out.push(inst),
                Err(msg) => {
                    if seen_errors.insert(msg.clone()) {
                        diags.push(Diagnostic::new(msg, Some(stage.name_span.clone())));
                    }
                }
            }
        }
    }
    Some(out)
}

/// The stage's own combinations: its sweep less what `own_excludes` removes, plus `include`.
fn own_combos<'s>(
    stage: &'s super::StageDef,
    own_excludes: &[&BTreeMap<String, Value>],
    diags: &mut Vec<Diagnostic>,
) -> Option<Vec<Combo<'s>>> {
    let as_map = |c: &Combo| -> BTreeMap<String, Value> { c.iter().map(|(a, v)| (a.name.clone(), v.clone())).collect() };
    let mut own: Vec<Combo> = combos(&stage.axes);
    own.retain(|c| !own_excludes.iter().any(|ex| matches(&as_map(c), ex)));
    for inc in &stage.include {
        if own.iter().any(|c| as_map(c) == *inc) {
            continue;
        }
        let all: Vec<&Axis> = stage.axes.iter().flat_map(|g| g.axes.iter()).collect();
        own.push(all.iter().filter_map(|a| inc.get(&a.name).map(|v| (*a, v.clone()))).collect());
    }
    if own.is_empty() {
        diags.push(Diagnostic::new(
            format!("empty sweep: `exclude` removes every combination of stage `{}`", stage.name),
            Some(stage.name_span.clone()),
        ));
        return None;
    }
    Some(own)
}

/// The upstream instances each reference selects: fan-out references (one instance per
/// instance of this stage) and gathered ones (all of them at once), by parameter.
type Selected = (Vec<(String, Vec<usize>)>, BTreeMap<String, Vec<usize>>);

fn select_inputs(
    p: &Pipeline,
    registry: &Registry,
    kind: &dyn wfpipe_stages::kind::StageKind,
    stage: &super::StageDef,
    stage_index: &HashMap<String, usize>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Selected> {
    let mut fanout: Vec<(String, Vec<usize>)> = Vec::new();
    let mut gathered: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut broken = false;
    for (param, r) in &stage.refs {
        let mut selected: Vec<usize> = Vec::new();
        for sel in &r.sels {
            let up = &p.stages[stage_index[&sel.stage]];
            let up_axes: BTreeSet<&String> = up.instances.iter().flat_map(|&i| p.instances[i].spec.axes.keys()).collect();
            for axis in sel.filters.keys() {
                if !up_axes.contains(axis) {
                    diags.push(
                        Diagnostic::new(format!("`{}` has no axis `{axis}` to select on", sel.stage), r.span.clone())
                            .suggest(axis, up_axes.iter().map(|s| s.as_str()))
                            .help_if_none(if up_axes.is_empty() {
                                format!("`{}` is not swept", sel.stage)
                            } else {
                                format!("its axes: {}", up_axes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))
                            }),
                    );
                    broken = true;
                }
            }
            let chosen: Vec<usize> = up.instances.iter().copied().filter(|&i| sel.admits(&p.instances[i].spec.axes)).collect();
            if chosen.is_empty() && !broken {
                diags.push(Diagnostic::new(format!("`{param}` selects no instance of `{}`", sel.stage), r.span.clone()));
                broken = true;
            }
            selected.extend(chosen);
        }
        selected.sort_by(|&a, &b| p.instances[a].id.cmp(&p.instances[b].id));
        selected.dedup();
        if !broken {
            broken = !check_connection(p, registry, kind, stage, param, r, &selected, diags);
        }
        match r.mode {
            RefMode::FanOut => fanout.push((param.clone(), selected)),
            RefMode::Gather => {
                gathered.insert(param.clone(), selected);
            }
        }
    }
    (!broken).then_some((fanout, gathered))
}

/// Joined fan-out choices: one upstream instance per fan-out reference, agreeing on every
/// axis name they share.
fn join_fanout(p: &Pipeline, stage: &super::StageDef, fanout: &[(String, Vec<usize>)], diags: &mut Vec<Diagnostic>) -> Option<Vec<Choice>> {
    let mut choices: Vec<Choice> = vec![(BTreeMap::new(), Vec::new())];
    for (param, candidates) in fanout {
        let mut next = Vec::new();
        for (axes, picked) in &choices {
            for &c in candidates {
                let inst = &p.instances[c];
                // Axes the reference pins with a selection are constant for this input:
                // they are neither joined on nor inherited.
                let pinned = &stage.refs[param].sels[0].filters;
                let free: Vec<(&String, &Value)> = inst.spec.axes.iter().filter(|(k, _)| !pinned.contains_key(*k)).collect();
                if free.iter().all(|(k, v)| axes.get(*k).is_none_or(|x| x == *v)) {
                    let mut a2 = axes.clone();
                    a2.extend(free.iter().map(|(k, v)| ((*k).clone(), (*v).clone())));
                    let mut p2 = picked.clone();
                    p2.push((param.clone(), c));
                    next.push((a2, p2));
                }
            }
        }
        choices = next;
    }
    if choices.is_empty() {
        diags.push(Diagnostic::new(
            format!("stage `{}`: its inputs share axes but no combination of their instances agrees on them", stage.name),
            Some(stage.name_span.clone()),
        ));
        return None;
    }
    Some(choices)
}

/// The axes of inputs and stage together: every name a joint `exclude` uses is one of
/// them, and the stage does not sweep a name its input already sweeps.
fn check_joint_axes(
    stage: &super::StageDef,
    own_names: &BTreeSet<&str>,
    choices: &[Choice],
    joint_excludes: &[&BTreeMap<String, Value>],
    diags: &mut Vec<Diagnostic>,
) -> Option<()> {
    let known: BTreeSet<&str> = choices.iter().flat_map(|(a, _)| a.keys().map(String::as_str)).chain(own_names.iter().copied()).collect();
    let mut bad_exclude = false;
    for ex in joint_excludes {
        for k in ex.keys() {
            if !known.contains(k.as_str()) {
                let span = stage.exclude_spans.get(k).cloned().flatten();
                diags.push(
                    Diagnostic::new(format!("`exclude` names `{k}`, which is not an axis of this stage"), span)
                        .suggest(k, known.iter().copied())
                        .help_if_none(format!(
                            "axes: {}",
                            if known.is_empty() { "none".to_owned() } else { known.iter().copied().collect::<Vec<_>>().join(", ") }
                        )),
                );
                bad_exclude = true;
            }
        }
    }
    if bad_exclude {
        return None;
    }
    let clash: Vec<&String> = choices[0].0.keys().filter(|k| own_names.contains(k.as_str())).collect();
    if !clash.is_empty() {
        diags.push(Diagnostic::new(
            format!(
                "stage `{}` sweeps `{}`, which its input already sweeps; rename the parameter or drop one sweep",
                stage.name, clash[0]
            ),
            Some(stage.name_span.clone()),
        ));
        return None;
    }
    Some(())
}

/// One instance of stage `si`: its parameters with `combo` applied, validated, with its
/// resources, estimate and data digest; files and key come later.
fn new_instance(
    p: &Pipeline,
    si: usize,
    kind: &dyn wfpipe_stages::kind::StageKind,
    mut axes: BTreeMap<String, Value>,
    combo: &Combo,
    inputs: BTreeMap<String, Vec<usize>>,
) -> Result<Instance, String> {
    let stage = &p.stages[si];
    let mut params = stage.params.clone();
    let mut rep = 0u64;
    for (axis, value) in combo {
        axes.insert(axis.name.clone(), value.clone());
        match &axis.target {
            AxisTarget::Param(name) => {
                params.insert(name.clone(), value.clone());
            }
            AxisTarget::MapEntry { param, key } => {
                let entry = params.entry(param.clone()).or_insert_with(|| Value::Table(BTreeMap::new()));
                if let Value::Table(t) = entry {
                    t.insert(key.clone(), value.clone());
                }
            }
            AxisTarget::Replicate => rep = value.as_i64().unwrap_or(0) as u64,
        }
    }
    let params = Params(params);
    kind.validate(&params).map_err(|e| format!("stage `{}`: {e}", stage.name))?;
    let mut resources = kind.resources(&params);
    if let Some(o) = &stage.resources {
        resources.cpus = o.cpus.unwrap_or(resources.cpus);
        resources.gpus = o.gpus.unwrap_or(resources.gpus);
        resources.mem_mb = o.mem_mb.unwrap_or(resources.mem_mb);
        resources.time_min = o.time_min.unwrap_or(resources.time_min);
    }
    let flops = kind.estimate_flops(&estimate_view(&params, &inputs, &p.instances));
    let data_digest = kind.builtin_data_digest(&params);
    Ok(Instance {
        id: instance_id(&stage.name, &axes),
        stage: si,
        spec: InstanceSpec {
            kind: stage.kind.clone(),
            version: stage.version,
            params,
            axes,
            seed: stage.seed.wrapping_add(rep),
            data_digest,
            ..InstanceSpec::default()
        },
        key: String::new(),
        inputs,
        resources,
        flops,
    })
}

/// The digests of the files an instance's file parameters name (each file read once per
/// load); false, with a diagnostic, when one cannot be read.
fn digest_files(
    p: &Pipeline,
    si: usize,
    inst: &mut Instance,
    file_digests: &mut HashMap<String, Result<String, String>>,
    seen_errors: &mut BTreeSet<String>,
    diags: &mut Vec<Diagnostic>,
) -> bool {
    let mut ok = true;
    for fp in &p.stages[si].file_params {
        let paths: Vec<String> = match inst.spec.params.0.get(fp) {
            Some(Value::Str(s)) if !s.is_empty() => vec![s.clone()],
            Some(Value::List(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
            _ => Vec::new(),
        };
        let mut digests = Vec::new();
        for rel in paths {
            let full = p.project_dir.join(&rel);
            let digest = file_digests
                .entry(full.to_string_lossy().into_owned())
                .or_insert_with(|| {
                    crate::project_path::inside_project(&p.project_dir, &rel)?;
                    crate::key::file_digest(&full).map_err(|e| format!("cannot read `{rel}` ({}): {e}", full.display()))
                })
                .clone();
            match digest {
                Ok(d) => digests.push((rel, d)),
                Err(msg) => {
                    if seen_errors.insert(msg.clone()) {
                        diags.push(Diagnostic::new(
                            format!("stage `{}`: {msg}", p.stages[si].name),
                            Some(p.stages[si].name_span.clone()),
                        ));
                    }
                    ok = false;
                }
            }
        }
        inst.spec.files.insert(fp.clone(), digests);
    }
    ok
}

/// Set the instance's inputs, the parameters left out of its key, and its key.
fn key_instance(p: &Pipeline, si: usize, specs: &[ParamSpec], inst: &mut Instance) {
    inst.spec.inputs = inst
        .inputs
        .iter()
        .map(|(param, idx)| {
            let refs = idx
                .iter()
                .map(|&i| {
                    let up = &p.instances[i];
                    InputRef { instance: up.id.clone(), kind: up.spec.kind.clone(), axes: up.spec.axes.clone(), key: up.key.clone() }
                })
                .collect();
            (param.clone(), refs)
        })
        .collect();
    // Stage names (in references) and file paths never enter a key: only the inputs' keys
    // and the files' contents do. Parameters added to a kind later and left at their
    // default stay out too, so results cached before they existed remain valid.
    let stage = &p.stages[si];
    inst.spec.unkeyed = stage
        .refs
        .keys()
        .chain(stage.file_params.iter())
        .map(String::as_str)
        .chain(unkeyed_defaults(specs, &inst.spec.params))
        .map(str::to_owned)
        .collect();
    inst.key = inst.spec.key();
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::key::{instance_key, KeyMaterial};
    use crate::kinds::Registry;
    use crate::pipeline::load_str;

    fn key_of(extra: &str) -> (String, crate::pipeline::Instance) {
        let text = format!(
            "[stage.toy]\nkind = \"toy-data\"\n\n[stage.flow]\nkind = \"train-flow\"\nweights = \"toy\"\niterations = 10\n{extra}\n"
        );
        let p = load_str(Path::new("keys.toml"), text, &[], &Registry::standard()).expect("pipeline loads");
        let inst = p.instances.iter().find(|i| i.spec.kind == "train-flow").expect("flow instance").clone();
        (inst.key.clone(), inst)
    }

    #[test]
    fn parameters_added_later_enter_the_key_only_away_from_their_default() {
        let (plain, inst) = key_of("");
        assert_eq!(plain, key_of("lr_schedule = \"constant\"\nwarmup = 0").0, "an explicit default is the same key");
        assert_ne!(plain, key_of("lr_schedule = \"cosine\"").0);
        assert_ne!(key_of("lr_schedule = \"cosine\"").0, key_of("lr_schedule = \"cosine\"\nwarmup = 5").0);
        assert_eq!(plain, key_of("output = \"target\"").0);
        assert_ne!(plain, key_of("output = \"velocity\"").0);
        assert_eq!(plain, key_of("attention = \"dense\"").0);
        assert_eq!(plain, key_of("recompute = false").0);
        assert_ne!(plain, key_of("recompute = true").0);
        assert_eq!(plain, key_of("max_loss_ratio = 1e4").0);
        assert_ne!(plain, key_of("max_loss_ratio = 100").0);
        assert_ne!(plain, key_of("attention = \"layer-blocks\"").0);
        assert_eq!(plain, key_of("positions = \"shared\"").0);
        assert_ne!(plain, key_of("positions = \"per-neuron\"").0);
        assert_eq!(plain, key_of("flush_subnormals = false").0);
        assert_ne!(plain, key_of("flush_subnormals = true").0);
        assert_eq!(plain, key_of("readout_offset = false").0);
        // The key equals the one computed before these parameters existed.
        let mut before = inst.spec.params.clone();
        for added in ["lr_schedule", "warmup", "ema", "output", "attention", "positions", "max_loss_ratio", "recompute", "flush_subnormals", "readout_offset"] {
            assert!(inst.spec.unkeyed.iter().any(|name| name == added), "`{added}` is unkeyed at its default");
            before.0.remove(added);
        }
        let skip = std::collections::BTreeSet::from(["weights"]);
        let toy_key = {
            let text = "[stage.toy]\nkind = \"toy-data\"\n".to_owned();
            let p = load_str(Path::new("keys.toml"), text, &[], &Registry::standard()).expect("pipeline loads");
            p.instances[0].key.clone()
        };
        let inputs = std::collections::BTreeMap::from([("weights".to_owned(), vec![toy_key])]);
        let old = instance_key(&KeyMaterial {
            kind: "train-flow",
            version: inst.spec.version,
            params: &before,
            skip: &skip,
            files: &inst.spec.files,
            inputs: &inputs,
            seed: inst.spec.seed,
            data: None,
        });
        assert_eq!(plain, old);
    }
}
