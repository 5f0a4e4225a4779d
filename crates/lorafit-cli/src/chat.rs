//! `lorafit chat`: one answer from the model (+ adapter) with the template, greedy, as
//! `llamafactory-cli chat` would render the turn.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use lorafit_core::Settings;
use lorafit_data::{Message, Role, Template, TextTokenizer};
use lorafit_train::lora::Adapter;
use lorafit_train::{Backend, Model, make_plain_device};

pub fn run(config: &Path, s: &Settings, prompt: &str, max_new_tokens: usize) -> Result<()> {
    let base = config.parent().unwrap_or(Path::new("."));
    let local = |p: &str| -> PathBuf { lorafit_data::load::resolve(base, p) };
    let model = s
        .str("model_name_or_path")
        .context("`model_name_or_path` is missing")?;
    let model_dir = local(model);
    if !model_dir.join("config.json").is_file() {
        bail!(
            "`model_name_or_path: {model}`: chat needs a local checkpoint directory ({} has no config.json)",
            model_dir.display()
        );
    }
    let name = s
        .str("template")
        .context("`template` is missing (e.g. `template: qwen3`)")?;
    let mut template = Template::get(name)?;
    if template.is_reasoning() {
        template.enable_thinking = Some(s.bool("enable_thinking", true));
    }
    if let Some(d) = s.str("default_system") {
        template.default_system = d.to_string();
    }
    let tok = TextTokenizer::load(&model_dir, Some(&template))?;
    // The prompt as the chat turn renders it: the user message and an empty answer's prompt side.
    let messages = [
        Message::new(Role::User, prompt),
        Message::new(Role::Assistant, ""),
    ];
    let (ids, _) = template.encode_oneturn(&tok, &messages, "", "")?;
    let device = make_plain_device(Backend::NdArray)?;
    let m = Model::load(&model_dir, &device)
        .with_context(|| format!("loading {}", model_dir.display()))?;
    let adapter = match s.str("adapter_name_or_path") {
        Some(a) => Adapter::load(&local(a), &m, 0.0, &device)?,
        None => Adapter::none(),
    };
    let mut stop: Vec<u32> = tok.eos_id.into_iter().collect();
    stop.extend(template.stop_words.iter().filter_map(|w| tok.token_id(w)));
    let out = m.generate_greedy(&ids, &adapter, max_new_tokens, &stop);
    let shown: Vec<u32> = out.iter().copied().filter(|t| !stop.contains(t)).collect();
    println!("{}", tok.decode(&shown)?);
    eprintln!(
        "({} prompt tokens, {} generated, greedy)",
        ids.len(),
        out.len()
    );
    Ok(())
}
