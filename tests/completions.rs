//! The shell completions and the man page come from the command line's own definitions: bash
//! loads the script and completes a subcommand from its first letters.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_cutover");

fn output(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// What bash's programmable completion offers for the words typed so far.
fn complete(script: &str, words: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cutover.bash");
    std::fs::write(&file, script).unwrap();
    let line = words.join(" ");
    let program = format!(
        "source {}; COMP_WORDS=({line}); COMP_CWORD={}; COMP_LINE='{line}'; COMP_POINT={}; \
         _cutover cutover {} {}; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file.display(),
        words.len() - 1,
        line.len(),
        words.last().unwrap(),
        words[words.len() - 2],
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_a_subcommand_and_its_flags() {
    let script = output(&["completions", "bash"]);
    assert_eq!(complete(&script, &["cutover", "ru"]), vec!["run"]);
    let rollback = complete(&script, &["cutover", "rollback", "--"]);
    for flag in ["--note", "--confirm", "--chain", "--only"] {
        assert!(rollback.iter().any(|f| f == flag), "{flag} in {rollback:?}");
    }
    assert_eq!(complete(&script, &["cutover", "unl"]), vec!["unlock"]);
}

#[test]
fn zsh_fish_and_the_man_page_are_generated_too() {
    assert!(output(&["completions", "zsh"]).contains("#compdef cutover"));
    assert!(output(&["completions", "fish"]).contains("complete -c cutover"));
    let man = output(&["man"]);
    assert!(man.contains(".TH cutover 1"), "{man}");
    assert!(man.contains("rollback"), "the subcommands are listed");
}
