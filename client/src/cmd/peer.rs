//! `hoard remote`, `hoard token`, `hoard push`, `hoard fetch`.

use crate::cmd::{oid_string, parse_oid};
use crate::connect::Client;
use crate::git::{tree, Repo};
use crate::remote::{self, Remote, Remotes};
use crate::ui;
use anyhow::{bail, Context};
use hoard_proto::paths::Paths;
use hoard_proto::v1::{TokenCreateRequest, TokenListRequest, TokenRevokeRequest};
use serde_json::json;

pub fn remote_add(
    paths: &Paths,
    name: &str,
    url: &str,
    token: Option<String>,
    fingerprint: Option<String>,
    ca: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    remote::check_url(url)?;
    if name.is_empty() || name.contains(['/', ' ', '\n']) {
        bail!("{name:?} cannot name a remote: use letters, digits, '-' or '_'");
    }
    let mut r = Remotes::load(paths).map_err(anyhow::Error::msg)?;
    let fingerprint = fingerprint.unwrap_or_default();
    if !fingerprint.is_empty() && parse_oid(&fingerprint).is_err() {
        bail!("{fingerprint:?} is not a fingerprint: the hub's `hoard daemon status` prints it as blake3:<64 hex digits>");
    }
    let ca = match ca {
        Some(p) => {
            let p = std::path::absolute(&p)?;
            std::fs::metadata(&p).with_context(|| format!("cannot read {}", p.display()))?;
            p.display().to_string()
        }
        None => String::new(),
    };
    if url.starts_with("http://") && (!fingerprint.is_empty() || !ca.is_empty()) {
        bail!("--fingerprint and --ca are for https:// remotes");
    }
    let new = Remote {
        url: url.to_string(),
        token: token.unwrap_or_default(),
        fingerprint,
        ca,
    };
    let verb = if r.remote.insert(name.to_string(), new).is_some() {
        "updated"
    } else {
        "added"
    };
    r.save(paths).map_err(anyhow::Error::msg)?;
    println!("{verb} remote {name} ({url})");
    Ok(())
}

pub fn remote_remove(paths: &Paths, name: &str) -> anyhow::Result<()> {
    let mut r = Remotes::load(paths).map_err(anyhow::Error::msg)?;
    if r.remote.remove(name).is_none() {
        bail!("there is no remote {name:?}; `hoard remote list` shows them");
    }
    r.save(paths).map_err(anyhow::Error::msg)?;
    println!("removed remote {name}");
    Ok(())
}

pub fn remote_list(paths: &Paths, json: bool) -> anyhow::Result<()> {
    let r = Remotes::load(paths).map_err(anyhow::Error::msg)?;
    let default = r.pick(None).map(|(n, _)| n);
    for (name, rem) in &r.remote {
        let is_default = default.as_deref() == Some(name.as_str());
        if json {
            println!(
                "{}",
                json!({"name": name, "url": rem.url, "token": !rem.token.is_empty(), "default": is_default})
            );
        } else {
            println!(
                "{name}\t{}\t{}{}",
                rem.url,
                if rem.token.is_empty() {
                    "no token"
                } else {
                    "token set"
                },
                if is_default { "\t(default)" } else { "" }
            );
        }
    }
    Ok(())
}

pub async fn token_create(
    mut client: Client,
    write: bool,
    admin: bool,
    note: String,
    json: bool,
) -> anyhow::Result<()> {
    let r = client
        .token_create(TokenCreateRequest { write, note, admin })
        .await
        .map_err(ui::status_error)?
        .into_inner();
    let info = r.info.context("the daemon sent no token details")?;
    if json {
        println!(
            "{}",
            json!({"token": r.token, "id": info.id, "scope": info.scope, "note": info.note})
        );
    } else {
        println!("{}", r.token);
        eprintln!(
            "token {} ({} access); shown once — give it to the other side's `hoard remote add NAME URL --token TOKEN`",
            info.id, info.scope
        );
    }
    Ok(())
}

pub async fn token_list(mut client: Client, json: bool) -> anyhow::Result<()> {
    let r = client
        .token_list(TokenListRequest {})
        .await
        .map_err(ui::status_error)?
        .into_inner();
    for t in r.tokens {
        if json {
            println!(
                "{}",
                json!({"id": t.id, "scope": t.scope, "created_unix": t.created_unix, "note": t.note})
            );
        } else {
            println!("{}\t{}\t{}\t{}", t.id, t.scope, t.created_unix, t.note);
        }
    }
    Ok(())
}

pub async fn token_revoke(mut client: Client, id: &str) -> anyhow::Result<()> {
    let r = client
        .token_revoke(TokenRevokeRequest { id: id.to_string() })
        .await
        .map_err(ui::status_error)?
        .into_inner();
    if !r.revoked {
        bail!("there is no token {id:?}; `hoard token list` shows them");
    }
    println!("revoked token {id}");
    Ok(())
}

/// `push`/`fetch [REMOTE] [OID|REV...]`: a first argument naming a remote
/// picks it (else the default); each other argument is an object id, or in
/// a git repository a revision whose tracked files are meant. Nothing: the
/// files tracked at HEAD.
pub async fn transfer(
    mut client: Client,
    paths: &Paths,
    args: Vec<String>,
    push: bool,
    json: bool,
) -> anyhow::Result<()> {
    let remotes = Remotes::load(paths).map_err(anyhow::Error::msg)?;
    let mut args = args.into_iter().peekable();
    let named = args.peek().and_then(|a| remotes.pick(Some(a)));
    let (name, rem) = match named {
        Some(r) => {
            args.next();
            r
        }
        None => remotes.pick(None).context(
            "no remote to use: `hoard remote add origin http://HOST:PORT --token TOKEN`",
        )?,
    };
    let mut oids = Vec::new();
    let mut revs: Vec<String> = Vec::new();
    for a in args {
        if a.starts_with("blake3:") || (a.len() == 64 && parse_oid(&a).is_ok()) {
            oids.push((parse_oid(&a)?, None));
        } else {
            revs.push(a);
        }
    }
    if oids.is_empty() && revs.is_empty() {
        revs.push("HEAD".into());
    }
    if !revs.is_empty() {
        let repo = Repo::discover().with_context(|| {
            format!("{revs:?} are not object ids (`blake3:<hex>`), and there is no git repository here to read them as revisions")
        })?;
        for r in revs {
            oids.extend(
                tree::at_rev(&repo, &r)?
                    .into_iter()
                    .map(|t| (t.pointer.oid.to_vec(), Some(t.pointer.size))),
            );
        }
    }
    oids.sort();
    oids.dedup();
    let s = remote::sync(&mut client, &rem, push, oids, json).await?;
    if json {
        println!(
            "{}",
            json!({
                "type": "summary", "remote": name, "direction": if push { "push" } else { "fetch" },
                "files": s.files, "files_already_there": s.files_already_there,
                "chunks_sent": s.chunks_sent, "chunks_skipped": s.chunks_skipped, "bytes": s.bytes,
                "missing": s.missing.iter().map(|m| oid_string(m)).collect::<Vec<_>>(),
            })
        );
    } else {
        println!(
            "{} {name}: {} files ({} already there); {} chunks, {} sent; {} chunks skipped (the receiver had them)",
            if push { "pushed to" } else { "fetched from" },
            s.files,
            s.files_already_there,
            s.chunks_sent,
            ui::bytes(s.bytes),
            s.chunks_skipped
        );
        for m in s.missing.iter().take(20) {
            eprintln!("hoard: {name} does not have {}", oid_string(m));
        }
    }
    if !s.missing.is_empty() {
        bail!("{} objects were not found on {name}", s.missing.len());
    }
    Ok(())
}
