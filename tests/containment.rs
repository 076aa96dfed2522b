//! Nothing wrong is ever cached: a killed attempt's programs cannot reach the next
//! attempt's result, swept values are never run as shell text, outputs and inputs cannot
//! reach outside their folders, and an entry folder without a manifest is recomputed.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Pids of the `exec-stage` processes working on this project's cache.
fn exec_stages(p: &Project) -> Vec<i32> {
    let cache = p.cache().display().to_string();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else { continue };
        let words: Vec<String> = cmdline.split(|&b| b == 0).map(|w| String::from_utf8_lossy(w).into_owned()).collect();
        if words.iter().any(|w| w == "exec-stage") && words.iter().any(|w| w.starts_with(&cache)) {
            pids.push(pid);
        }
    }
    pids
}

/// The published files of every entry, by instance name and path.
fn published(p: &Project) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(p.cache().join("entries")).unwrap().flatten() {
        for entry in std::fs::read_dir(shard.path()).unwrap().flatten() {
            let m: serde_json::Value = serde_json::from_slice(&std::fs::read(entry.path().join("manifest.json")).unwrap()).unwrap();
            for f in m["outputs"].as_array().unwrap() {
                out.push((m["instance"].as_str().unwrap().to_owned(), entry.path().join("out").join(f["path"].as_str().unwrap())));
            }
        }
    }
    out.sort();
    out
}

fn output_of(p: &Project, instance: &str) -> String {
    let (_, path) = published(p).into_iter().find(|(i, _)| i == instance).unwrap_or_else(|| panic!("no entry for {instance}"));
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn a_killed_exec_stage_leaves_no_program_writing_into_the_next_attempt() {
    let p = Project::new();
    // Each program sleeps, then appends a line naming its shell's pid; one writes through
    // the absolute work folder, one through a relative path.
    p.write(
        "pipelines/o.toml",
        r#"
[stage.abs]
kind = "command"
cmd = ["sh", "-c", "sleep 2; echo line-from-$$ >> $WFPIPE_OUT/o.txt; echo abs >> $COUNTER"]
outputs = ["o.txt"]

[stage.rel]
kind = "command"
cmd = ["sh", "-c", "sleep 2; echo line-from-$$ >> o.txt; echo rel >> $COUNTER"]
outputs = ["o.txt"]
"#,
    );
    let mut run = p.cmd(&["run", "pipelines/o.toml", "-j", "2", "-q"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut victims = Vec::new();
    while victims.len() < 2 {
        assert!(Instant::now() < deadline, "the exec-stage processes never started");
        victims = exec_stages(&p);
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    for pid in &victims {
        // SAFETY: kill(2) on a pid just read from /proc.
        unsafe {
            libc::kill(*pid, libc::SIGKILL);
        }
    }
    let status = run.wait().unwrap();
    assert!(!status.success(), "the killed attempts must fail the run");
    assert_ok(&p.run(&["run", "pipelines/o.toml", "-j", "2"]));
    // Long enough for a surviving program of the first attempt to have written.
    std::thread::sleep(Duration::from_millis(2500));
    for stage in ["abs", "rel"] {
        let text = output_of(&p, stage);
        assert_eq!(text.lines().count(), 1, "{stage}: the published o.txt mixes attempts:\n{text}");
    }
    assert_eq!(p.computed(), vec!["abs", "rel"], "a program of the killed attempt ran to its end");
    assert_ok(&p.run(&["cache", "verify"]));
}

#[test]
fn swept_values_are_never_run_as_shell_text() {
    let p = Project::new();
    let marker = p.path().join("pwned");
    let pipeline = format!(
        r#"
[stage.a]
kind = "command"
cmd = ["sh", "-c", "echo {{N}} > o.txt"]
outputs = ["o.txt"]
matrix.env.N = ["x; touch {m}1", "$(touch {m}2)"]
"#,
        m = marker.display()
    );
    p.write("pipelines/s.toml", &pipeline);
    let o = p.run(&["run", "pipelines/s.toml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("embeds the value placeholder `{N}`"), "{}", text(&o));
    // Opting in quotes each value: the program sees it as one literal word.
    p.write("pipelines/s.toml", &pipeline.replace("outputs =", "shell_quote = true\noutputs ="));
    assert_ok(&p.run(&["run", "pipelines/s.toml"]));
    assert!(!Path::new(&format!("{}1", marker.display())).exists() && !Path::new(&format!("{}2", marker.display())).exists());
    let texts: Vec<String> = published(&p).iter().map(|(_, f)| std::fs::read_to_string(f).unwrap()).collect();
    assert!(texts.contains(&format!("x; touch {}1\n", marker.display())), "{texts:?}");
    assert!(texts.contains(&format!("$(touch {}2)\n", marker.display())), "{texts:?}");
    // A whole-word placeholder stays one raw argument, without a shell.
    p.write(
        "pipelines/w.toml",
        "[stage.w]\nkind = \"command\"\ncmd = [\"sh\", \"-c\", \"printf '%s' \\\"$1\\\" > o.txt\", \"sh\", \"{N}\"]\noutputs = [\"o.txt\"]\nenv = { N = \"$(touch nope) ; x\" }\n",
    );
    assert_ok(&p.run(&["run", "pipelines/w.toml"]));
    assert_eq!(output_of(&p, "w"), "$(touch nope) ; x");
}

#[test]
fn shell_true_passes_each_later_word_as_one_argument() {
    let p = Project::new();
    let marker = p.path().join("pwned");
    p.write(
        "pipelines/q.toml",
        &format!(
            "[stage.q]\nkind = \"command\"\nshell = true\ncmd = [\"printf '%s|' > o.txt\", \"a b; touch {m}\", \"it's\", \"$(touch {m})\"]\noutputs = [\"o.txt\"]\n",
            m = marker.display()
        ),
    );
    assert_ok(&p.run(&["run", "pipelines/q.toml"]));
    assert_eq!(output_of(&p, "q"), format!("a b; touch {m}|it's|$(touch {m})|", m = marker.display()));
    assert!(!marker.exists(), "an argument was run as shell text");
}

#[test]
fn outputs_through_symbolic_links_are_refused_and_the_linked_files_stay_put() {
    let p = Project::new();
    let outside = p.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep.txt"), "mine\n").unwrap();
    p.write(
        "pipelines/l.toml",
        &format!(
            r#"
[stage.folder]
kind = "command"
cmd = ["sh", "-c", "ln -s {o} d"]
outputs = ["d/keep.txt"]

[stage.link]
kind = "command"
cmd = ["sh", "-c", "ln -s {o}/keep.txt l.txt"]
outputs = ["l.txt"]

[stage.inside]
kind = "command"
cmd = ["sh", "-c", "mkdir d && ln -s {o}/keep.txt d/l.txt"]
outputs = ["d"]
"#,
            o = outside.display()
        ),
    );
    let o = p.run(&["run", "pipelines/l.toml", "--keep-going"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("declared output `d/keep.txt` goes through the symbolic link `d`"), "{t}");
    assert!(t.contains("declared output `l.txt` goes through the symbolic link `l.txt`"), "{t}");
    assert!(t.contains("declared output `d` holds the symbolic link"), "{t}");
    assert_eq!(std::fs::read_to_string(outside.join("keep.txt")).unwrap(), "mine\n", "the linked file was moved");
    assert!(published(&p).is_empty());
}

#[test]
fn entries_are_read_only_and_a_stage_that_modifies_its_input_fails() {
    let p = Project::new();
    p.write(
        "pipelines/m.toml",
        r#"
[stage.up]
kind = "command"
cmd = ["sh", "-c", "mkdir d; echo up > d/o.txt; echo up >> $COUNTER"]
outputs = ["d"]

[stage.down]
kind = "command"
input = "up"
cmd = ["sh", "-c", "chmod -R u+w $WFPIPE_INPUT 2>/dev/null; echo x >> $WFPIPE_INPUT/d/o.txt; echo done > r.txt"]
outputs = ["r.txt"]
"#,
    );
    let o = p.run(&["run", "pipelines/m.toml"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("the stage modified its input `up`"), "{t}");
    assert!(t.contains("quarantined and will be recomputed"), "{t}");
    assert!(published(&p).iter().all(|(i, _)| i != "down"), "the modifying stage was published");
    // The tampered entry is gone from the cache; the next run recomputes it.
    assert!(published(&p).is_empty());
    p.write("pipelines/m.toml", &std::fs::read_to_string(p.path().join("pipelines/m.toml")).unwrap().replace("echo x >> $WFPIPE_INPUT/d/o.txt; ", "cat $WFPIPE_INPUT/d/o.txt > /dev/null; "));
    assert_ok(&p.run(&["run", "pipelines/m.toml"]));
    assert_eq!(p.computed(), vec!["up", "up"]);
    for (instance, file) in published(&p) {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o444, "{instance}: {} is writable", file.display());
        let folder = std::fs::metadata(file.parent().unwrap()).unwrap().permissions().mode() & 0o777;
        assert_eq!(folder, 0o555, "{instance}: {} is writable", file.parent().unwrap().display());
    }
    // Sealed entries can still be collected.
    p.write("pipelines/empty.toml", "[stage.z]\nkind = \"command\"\ncmd = [\"true\"]\n");
    assert_ok(&p.run(&["cache", "gc", "pipelines/empty.toml", "--apply"]));
    assert!(published(&p).is_empty());
}

#[test]
fn an_entry_folder_without_a_manifest_is_recomputed_and_leaves_nothing_behind() {
    let p = Project::new();
    p.write("pipelines/p.toml", SWEEP);
    assert_ok(&p.run(&["run", "pipelines/p.toml"]));
    let (_, file) = published(&p).into_iter().find(|(i, _)| i == "join").unwrap();
    let entry = file.parent().unwrap().parent().unwrap().to_path_buf();
    std::fs::remove_file(entry.join("manifest.json")).unwrap();
    p.clear_counter();
    for _ in 0..2 {
        assert_ok(&p.run(&["run", "pipelines/p.toml"]));
    }
    assert_eq!(p.computed(), vec!["join"]);
    assert_eq!(output_of(&p, "join"), "GEN 1 1\nGEN 2 1\nGEN 3 1\n");
    assert_eq!(std::fs::read_dir(p.cache().join("tmp")).unwrap().count(), 0, "assembly folders leaked");
}

#[test]
fn the_same_key_in_two_caches_is_two_attempts_neither_kills_the_other() {
    // Equal pipelines compute equal keys; only the cache tells their attempts apart.
    let pipeline = "[stage.s]\nkind = \"command\"\ncmd = [\"sh\", \"-c\", \"sleep 1; echo ok > o.txt\"]\noutputs = [\"o.txt\"]\n";
    let (a, b) = (Project::new(), Project::new());
    a.write("pipelines/p.toml", pipeline);
    b.write("pipelines/p.toml", pipeline);
    let first = a.cmd(&["run", "pipelines/p.toml", "-q"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let second = b.cmd(&["run", "pipelines/p.toml", "-q"]).spawn().unwrap();
    let (oa, ob) = (first.wait_with_output().unwrap(), second.wait_with_output().unwrap());
    assert_ok(&oa);
    assert_ok(&ob);
    assert_eq!(output_of(&a, "s"), "ok\n");
    assert_eq!(output_of(&b, "s"), "ok\n");
}

#[test]
fn a_declared_input_file_cannot_lead_out_of_the_project_through_a_link() {
    let p = Project::new();
    let outside = wfpipe::scratch::ScratchDir::new("test").unwrap();
    std::fs::write(outside.path().join("secret.txt"), "not the project's\n").unwrap();
    std::fs::create_dir_all(p.path().join("scripts")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), p.path().join("scripts/data.txt")).unwrap();
    p.write("pipelines/i.toml", "[stage.s]\nkind = \"command\"\ncmd = [\"true\"]\ninputs = [\"scripts/data.txt\"]\n");
    let o = p.run(&["validate", "pipelines/i.toml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("`scripts/data.txt` leads outside the project folder"), "{}", text(&o));
    // A link that stays inside is fine.
    p.write("scripts/real.txt", "mine\n");
    std::fs::remove_file(p.path().join("scripts/data.txt")).unwrap();
    std::os::unix::fs::symlink("real.txt", p.path().join("scripts/data.txt")).unwrap();
    assert_ok(&p.run(&["validate", "pipelines/i.toml"]));
}
