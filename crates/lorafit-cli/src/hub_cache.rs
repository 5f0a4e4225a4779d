//! Hub ids resolved from the machine's model caches, before the catalog: someone who ran
//! LLaMA-Factory has the model's `config.json` in the Hugging Face cache
//! (`HF_HUB_CACHE`, `HF_HOME/hub`, `~/.cache/huggingface/hub/models--ORG--NAME/snapshots/*/`)
//! or in ModelScope's (`MODELSCOPE_CACHE`, `~/.cache/modelscope/hub/[models/]ORG/NAME/`).
//! `USE_MODELSCOPE_HUB=1` (LLaMA-Factory's switch) looks in ModelScope's first.

use std::path::PathBuf;

/// Which cache a config.json came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    HuggingFace,
    ModelScope,
}

impl Cache {
    pub fn name(self) -> &'static str {
        match self {
            Cache::HuggingFace => "the Hugging Face cache",
            Cache::ModelScope => "the ModelScope cache",
        }
    }
}

fn env_path(key: &str) -> Option<PathBuf> {
    std::env::var_os(key)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn home() -> Option<PathBuf> {
    env_path("HOME")
}

/// The Hugging Face hub cache directory, as huggingface_hub computes it.
fn hf_hub_dir() -> Option<PathBuf> {
    env_path("HF_HUB_CACHE")
        .or_else(|| env_path("HUGGINGFACE_HUB_CACHE"))
        .or_else(|| env_path("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| env_path("XDG_CACHE_HOME").map(|c| c.join("huggingface/hub")))
        .or_else(|| home().map(|h| h.join(".cache/huggingface/hub")))
}

/// `models--ORG--NAME/snapshots/<rev>/config.json`: the revision `refs/main` names, else the
/// newest snapshot that has a config.json.
fn from_hf(id: &str) -> Option<PathBuf> {
    let repo = hf_hub_dir()?.join(format!("models--{}", id.replace('/', "--")));
    let snapshots = repo.join("snapshots");
    if let Ok(rev) = std::fs::read_to_string(repo.join("refs/main")) {
        let f = snapshots.join(rev.trim()).join("config.json");
        if f.is_file() {
            return Some(f);
        }
    }
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&snapshots)
        .ok()?
        .flatten()
        .map(|e| e.path().join("config.json"))
        .filter(|f| f.is_file())
        .map(|f| {
            let t = std::fs::metadata(&f)
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (t, f)
        })
        .collect();
    found.sort();
    found.pop().map(|(_, f)| f)
}

/// ModelScope keeps `ORG/NAME/` (older) or `models/ORG/NAME/` (newer) under its hub directory.
fn from_modelscope(id: &str) -> Option<PathBuf> {
    let roots: Vec<PathBuf> = match env_path("MODELSCOPE_CACHE") {
        Some(c) => vec![c.clone(), c.join("hub")],
        None => home()
            .map(|h| vec![h.join(".cache/modelscope/hub")])
            .unwrap_or_default(),
    };
    // ModelScope writes dots in names as `___` in some versions.
    let names = [id.to_string(), id.replace('.', "___")];
    roots
        .iter()
        .flat_map(|r| [r.clone(), r.join("models")])
        .flat_map(|r| names.iter().map(move |n| r.join(n).join("config.json")))
        .find(|f| f.is_file())
}

/// The cached config.json of hub id `id` (`ORG/NAME`), if any cache has it.
pub fn find(id: &str) -> Option<(PathBuf, Cache)> {
    let parts: Vec<&str> = id.split('/').collect();
    if parts.len() != 2
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return None;
    }
    let modelscope_first = std::env::var("USE_MODELSCOPE_HUB")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "y" | "yes"));
    let hf = || from_hf(id).map(|p| (p, Cache::HuggingFace));
    let ms = || from_modelscope(id).map(|p| (p, Cache::ModelScope));
    if modelscope_first {
        ms().or_else(hf)
    } else {
        hf().or_else(ms)
    }
}
