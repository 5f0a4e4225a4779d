//! `lorafit chat`: the model (+ adapter) with the template, as `llamafactory-cli chat` runs it —
//! LLaMA-Factory's generating keys and defaults, the answer streamed as it is decoded, and a
//! conversation on standard input (`clear` forgets it, `exit` ends) unless `--prompt` gives one
//! message.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use lorafit_core::Settings;
use lorafit_data::{Message, Role, Template, TextTokenizer};
use lorafit_train::generate::GenConfig;
use lorafit_train::lora::Adapter;
use lorafit_train::{Backend, Model, make_plain_device};

struct Chat {
    model: Model,
    adapter: Adapter,
    template: Template,
    tok: TextTokenizer,
    gen_cfg: GenConfig,
    stop: Vec<u32>,
    skip_special: bool,
    system: String,
}

impl Chat {
    fn load(config: &Path, s: &Settings, max_new_tokens: Option<usize>) -> Result<Self> {
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
        let mut gen_cfg = GenConfig::from_settings(s)?;
        if let Some(n) = max_new_tokens {
            gen_cfg.max_new_tokens = n;
        }
        let device = make_plain_device(Backend::NdArray)?;
        let m = Model::load(&model_dir, &device)
            .with_context(|| format!("loading {}", model_dir.display()))?;
        let adapter = match s.str("adapter_name_or_path") {
            Some(a) => Adapter::load(&local(a), &m, 0.0, &device)?,
            None => Adapter::none(),
        };
        // LLaMA-Factory's `get_stop_token_ids`: eos and the template's stop words.
        let mut stop: Vec<u32> = tok.eos_id.into_iter().collect();
        stop.extend(template.stop_words.iter().filter_map(|w| tok.token_id(w)));
        Ok(Chat {
            model: m,
            adapter,
            template,
            tok,
            gen_cfg,
            stop,
            skip_special: s.bool("skip_special_tokens", true),
            system: String::new(),
        })
    }

    /// The answer to the conversation `history` (ending with a user turn), printed as decoded.
    fn answer(&self, history: &[Message]) -> Result<String> {
        let mut messages = history.to_vec();
        messages.push(Message::new(Role::Assistant, ""));
        let (ids, _) = self
            .template
            .encode_oneturn(&self.tok, &messages, &self.system, "")?;
        let mut shown: Vec<u32> = Vec::new();
        let mut printed = 0usize;
        let mut out = std::io::stdout();
        let started = std::time::Instant::now();
        let tokens = self
            .model
            .generate(&ids, &self.adapter, &self.gen_cfg, &self.stop, |t| {
                if self.stop.contains(&t) {
                    return;
                }
                shown.push(t);
                // Print what is decodable so far; a multi-byte character split across tokens
                // waits for its last byte.
                if let Ok(text) = self.tok.decode_with(&shown, self.skip_special)
                    && !text.ends_with('\u{FFFD}')
                    && text.len() > printed
                    && text.is_char_boundary(printed)
                {
                    let _ = write!(out, "{}", &text[printed..]);
                    let _ = out.flush();
                    printed = text.len();
                }
            });
        let text = self.tok.decode_with(&shown, self.skip_special)?;
        if text.len() > printed && text.is_char_boundary(printed) {
            out_part!("{}", &text[printed..]);
        }
        out!();
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "({} prompt tokens, {} generated in {secs:.1} s, {:.1} tokens/s, {})",
            ids.len(),
            tokens.len(),
            tokens.len() as f64 / secs.max(1e-9),
            self.gen_cfg.describe()
        );
        Ok(text)
    }
}

pub fn run(
    config: &Path,
    s: &Settings,
    prompt: Option<&str>,
    max_new_tokens: Option<usize>,
) -> Result<()> {
    let chat = Chat::load(config, s, max_new_tokens)?;
    if let Some(p) = prompt {
        chat.answer(&[Message::new(Role::User, p)])?;
        return Ok(());
    }
    eprintln!(
        "Chat with {} ({}): type a message; `clear` forgets the conversation, `exit` ends.",
        s.str("model_name_or_path").unwrap_or("the model"),
        chat.gen_cfg.describe()
    );
    let mut history: Vec<Message> = Vec::new();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        eprint!("\nUser: ");
        let Some(line) = lines.next() else { break };
        let line = line.context("reading standard input")?;
        let query = line.trim();
        match query {
            "exit" => break,
            "clear" => {
                history.clear();
                eprintln!("History has been removed.");
                continue;
            }
            "" => continue,
            _ => {}
        }
        history.push(Message::new(Role::User, query));
        eprint!("Assistant: ");
        let answer = chat.answer(&history)?;
        history.push(Message::new(Role::Assistant, &answer));
    }
    Ok(())
}
