//! `hoard --help`: the verbs under one heading per group (store, git,
//! datasets, sharing, daemon). The list is rendered from the clap command
//! itself — each group's verbs are the subcommands its enum in
//! [`crate::cli`] defines, their text is their `about`, hidden verbs stay
//! hidden — so it cannot drift from the verbs `hoard` has. `hoard help
//! VERB` and `hoard VERB --help` are clap's own.

use crate::cli::{Cli, DaemonVerb, DatasetVerb, GitVerb, SharingVerb, StoreVerb};
use clap::builder::StyledStr;
use clap::{CommandFactory, Subcommand};
use std::fmt::Write;

/// Adds one group's verbs to a command (the group enum's clap derive).
type Augment = fn(clap::Command) -> clap::Command;

/// The headings of `hoard --help`, in order, and the group under each.
const GROUPS: [(&str, Augment); 5] = [
    ("Store", StoreVerb::augment_subcommands),
    ("Git", GitVerb::augment_subcommands),
    ("Datasets", DatasetVerb::augment_subcommands),
    ("Sharing", SharingVerb::augment_subcommands),
    ("Daemon", DaemonVerb::augment_subcommands),
];

/// The `hoard` command, its help listing the verbs by group.
pub fn command() -> clap::Command {
    let cmd = Cli::command();
    let listing = listing(&cmd);
    let h = cmd.get_styles().get_header();
    // clap's default layout, with the grouped list in place of `Commands:`.
    let template = format!(
        "{{about-with-newline}}\n{{usage-heading}} {{usage}}\n\n{{before-help}}{h}Options:{h:#}\n{{options}}{{after-help}}"
    );
    cmd.before_help(listing)
        .help_template(template)
        .after_help("`hoard help VERB` or `hoard VERB --help` shows a verb's arguments and flags.")
}

/// The names of the verbs one group defines.
fn members(augment: Augment) -> Vec<String> {
    augment(clap::Command::new("group"))
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect()
}

/// The grouped verb list: a heading per group, a line per visible verb;
/// verbs of no group (there should be none) under "Other".
fn listing(cmd: &clap::Command) -> StyledStr {
    let visible: Vec<&clap::Command> = cmd.get_subcommands().filter(|c| !c.is_hide_set()).collect();
    let mut groups: Vec<(&str, Vec<&clap::Command>)> = GROUPS
        .iter()
        .map(|(heading, augment)| {
            let names = members(*augment);
            let verbs = visible.iter().copied();
            (
                *heading,
                verbs
                    .filter(|c| names.iter().any(|n| n == c.get_name()))
                    .collect(),
            )
        })
        .collect();
    let grouped: Vec<&str> = groups
        .iter()
        .flat_map(|(_, v)| v.iter().map(|c| c.get_name()))
        .collect();
    let other = visible
        .iter()
        .copied()
        .filter(|c| !grouped.contains(&c.get_name()));
    groups.push(("Other", other.collect()));

    let styles = cmd.get_styles();
    let (header, literal) = (styles.get_header(), styles.get_literal());
    let width = visible
        .iter()
        .map(|c| c.get_name().len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (heading, verbs) in groups.iter().filter(|(_, v)| !v.is_empty()) {
        if !out.is_empty() {
            out.push('\n');
        }
        let _ = writeln!(out, "{header}{heading}:{header:#}");
        for c in verbs {
            let name = c.get_name();
            let about = c.get_about().map(ToString::to_string).unwrap_or_default();
            let pad = width - name.len();
            let _ = writeln!(out, "  {literal}{name}{literal:#}{:pad$}  {about}", "");
        }
    }
    // clap follows the before-help text with a blank line.
    StyledStr::from(out.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verbs `hoard --help` must list: visible, and not clap's `help`.
    fn visible_verbs() -> Vec<String> {
        let mut cmd = command();
        cmd.build();
        cmd.get_subcommands()
            .filter(|c| !c.is_hide_set() && c.get_name() != "help")
            .map(|c| c.get_name().to_string())
            .collect()
    }

    #[test]
    fn every_visible_verb_is_in_exactly_one_group() {
        let groups: Vec<Vec<String>> = GROUPS.iter().map(|(_, a)| members(*a)).collect();
        let verbs = visible_verbs();
        assert!(verbs.len() > 20, "{verbs:?}");
        for verb in verbs {
            let n = groups.iter().filter(|g| g.contains(&verb)).count();
            assert_eq!(n, 1, "`{verb}` is in {n} groups");
        }
    }

    #[test]
    fn help_lists_each_verb_once_under_its_heading() {
        command().debug_assert();
        let help = command().render_help().to_string();
        let headings: Vec<&str> = help
            .lines()
            .filter(|l| l.ends_with(':') && !l.starts_with(' '))
            .collect();
        assert_eq!(
            headings,
            [
                "Store:",
                "Git:",
                "Datasets:",
                "Sharing:",
                "Daemon:",
                "Options:"
            ],
            "{help}"
        );
        for verb in visible_verbs() {
            let lines = help
                .lines()
                .filter(|l| l.trim_start().split(' ').next() == Some(verb.as_str()))
                .count();
            assert_eq!(lines, 1, "`{verb}` in\n{help}");
        }
        // Hidden stays hidden.
        assert!(
            !help.lines().any(|l| l.trim_start().starts_with("hook ")),
            "{help}"
        );
        // Each verb sits under its own group's heading.
        let store = help.find("Store:").unwrap_or(usize::MAX);
        let git = help.find("Git:").unwrap_or(0);
        let add = help.find("  add ").unwrap_or(0);
        assert!(store < add && add < git, "{help}");
    }

    #[test]
    fn verb_help_still_works() {
        for argv in [["hoard", "help", "add"], ["hoard", "add", "--help"]] {
            let e = match command().try_get_matches_from(argv) {
                Ok(_) => panic!("{argv:?} parsed as a command"),
                Err(e) => e,
            };
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp, "{argv:?}");
            let text = e.render().to_string();
            assert!(text.contains("Usage: hoard add"), "{argv:?}: {text}");
            assert!(text.contains("--json"), "{argv:?}: {text}");
            assert!(!text.contains("Datasets:"), "{argv:?}: {text}");
        }
    }
}
