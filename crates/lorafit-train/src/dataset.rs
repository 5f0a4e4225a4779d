//! LLaMA-Factory datasets by name: `dataset_info.json`, the alpaca and sharegpt formats, chat
//! templates (default, empty, llama3, qwen, mistral, deepseekr1), prompt masking and cutoff_len
//! truncation as its `SupervisedDatasetProcessor` does them, with the model's `tokenizer.json`.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::Tokenizer;

use crate::config::TrainArgs;
use crate::data::Example;
use crate::error::{Error, Result};

/// A piece of a template: text with `{{content}}`, or a special token.
#[derive(Debug, Clone, PartialEq)]
enum Slot {
    Text(&'static str),
    Bos,
    Eos,
}

/// The templates lorafit knows, as LLaMA-Factory registers them.
#[derive(Debug, Clone)]
pub struct Template {
    pub name: &'static str,
    prefix: Vec<Slot>,
    user: Vec<Slot>,
    assistant: Vec<Slot>,
    system: Vec<Slot>,
    default_system: &'static str,
    stop_words: &'static [&'static str],
    replace_eos: bool,
    /// Llama2Template: the system text is fused into the first user message.
    fuse_system: bool,
    /// ReasoningTemplate: an empty thought is added to responses without one.
    reasoning: bool,
}

/// Template names accepted by `template`.
pub const TEMPLATES: &[&str] = &[
    "default",
    "empty",
    "llama3",
    "qwen",
    "mistral",
    "deepseekr1",
];

impl Template {
    pub fn get(name: &str) -> Result<Self> {
        use Slot::*;
        let content = || vec![Text("{{content}}")];
        let with_eos = || vec![Text("{{content}}"), Eos];
        let base = Template {
            name: "empty",
            prefix: vec![],
            user: content(),
            assistant: with_eos(),
            system: content(),
            default_system: "",
            stop_words: &[],
            replace_eos: false,
            fuse_system: false,
            reasoning: false,
        };
        Ok(match name {
            "default" => Template {
                name: "default",
                user: vec![Text("Human: {{content}}"), Eos, Text("\nAssistant:")],
                assistant: vec![Text("{{content}}"), Eos, Text("\n")],
                system: vec![Text("System: {{content}}"), Eos, Text("\n")],
                ..base
            },
            "empty" => Template {
                assistant: content(),
                ..base
            },
            "llama3" => Template {
                name: "llama3",
                prefix: vec![Bos],
                user: vec![Text(
                    "<|start_header_id|>user<|end_header_id|>\n\n{{content}}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
                )],
                assistant: vec![Text("{{content}}<|eot_id|>")],
                system: vec![Text(
                    "<|start_header_id|>system<|end_header_id|>\n\n{{content}}<|eot_id|>",
                )],
                stop_words: &["<|eot_id|>", "<|eom_id|>"],
                replace_eos: true,
                ..base
            },
            "qwen" => Template {
                name: "qwen",
                user: vec![Text(
                    "<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n",
                )],
                assistant: vec![Text("{{content}}<|im_end|>\n")],
                system: vec![Text("<|im_start|>system\n{{content}}<|im_end|>\n")],
                default_system: "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
                stop_words: &["<|im_end|>"],
                replace_eos: true,
                ..base
            },
            "mistral" => Template {
                name: "mistral",
                prefix: vec![Bos],
                user: vec![Text("[INST] {{content}}[/INST]")],
                assistant: vec![Text(" {{content}}"), Eos],
                system: vec![Text("{{content}}\n\n")],
                fuse_system: true,
                ..base
            },
            "deepseekr1" => Template {
                name: "deepseekr1",
                prefix: vec![Bos],
                user: vec![Text("<｜User｜>{{content}}<｜Assistant｜>")],
                reasoning: true,
                ..base
            },
            other => {
                return Err(Error::Invalid(format!(
                    "`template: {other}` is not one lorafit knows (known: {})",
                    TEMPLATES.join(", ")
                )));
            }
        })
    }
}

/// A tokenizer.json plus the special tokens tokenizer_config.json names, fixed up for a template
/// (eos replaced by the template's stop word, pad = eos when missing) as LLaMA-Factory does.
#[derive(Debug)]
pub struct TextTokenizer {
    tok: Tokenizer,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub pad_id: Option<u32>,
}

fn special(cfg: &Value, key: &str) -> Option<String> {
    match cfg.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

impl TextTokenizer {
    pub fn load(model_dir: &Path, template: &Template) -> Result<Self> {
        let path = model_dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(Error::Invalid(format!(
                "{} is missing: a text dataset needs the model's tokenizer (or give a pre-tokenized .jsonl)",
                path.display()
            )));
        }
        let tok = Tokenizer::from_file(&path)
            .map_err(|e| Error::ckpt(&path, format!("cannot be read as a tokenizer: {e}")))?;
        let cfg_path = model_dir.join("tokenizer_config.json");
        let cfg: Value = match std::fs::read_to_string(&cfg_path) {
            Ok(t) => serde_json::from_str(&t)
                .map_err(|e| Error::ckpt(&cfg_path, format!("not valid JSON: {e}")))?,
            Err(_) => Value::Null,
        };
        let id = |name: Option<String>| -> Result<Option<u32>> {
            match name {
                None => Ok(None),
                Some(n) => tok.token_to_id(&n).map(Some).ok_or_else(|| {
                    Error::ckpt(
                        &cfg_path,
                        format!("names the token `{n}`, which tokenizer.json does not have"),
                    )
                }),
            }
        };
        let bos_id = id(special(&cfg, "bos_token"))?;
        let mut eos_id = id(special(&cfg, "eos_token"))?;
        if template.replace_eos
            && let Some(stop) = template.stop_words.first()
        {
            eos_id = Some(tok.token_to_id(stop).ok_or_else(|| {
                Error::Invalid(format!(
                    "template `{}` ends turns with `{stop}`, which {} does not have as a token",
                    template.name,
                    path.display()
                ))
            })?);
        }
        if eos_id.is_none() {
            eos_id = tok.token_to_id("<|endoftext|>");
        }
        let pad_id = id(special(&cfg, "pad_token"))?.or(eos_id);
        Ok(TextTokenizer {
            tok,
            bos_id,
            eos_id,
            pad_id,
        })
    }

    /// `tokenizer.encode(text, add_special_tokens=False)`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        self.tok
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::Invalid(format!("tokenizing {text:?}: {e}")))
    }

    fn slots(&self, slots: &[Slot], content: &str) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        for s in slots {
            match s {
                Slot::Text(t) => out.extend(self.encode(&t.replace("{{content}}", content))?),
                Slot::Bos => out.extend(self.bos_id),
                Slot::Eos => out.extend(self.eos_id),
            }
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    User,
    Assistant,
}

/// A conversation in LLaMA-Factory's normal form: alternating user/assistant, ending with the response.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub system: String,
    messages: Vec<(Role, String)>,
}

const THOUGHT: (&str, &str) = ("<think>\n", "\n</think>\n\n");

/// LLaMA-Factory's `infer_seqlen`.
pub fn infer_seqlen(source: usize, target: usize, cutoff: usize) -> (usize, usize) {
    let max_target = if target * 2 < cutoff {
        cutoff
    } else if source * 2 < cutoff {
        cutoff - source
    } else {
        (cutoff as f64 * (target as f64 / (source + target) as f64)) as usize
    };
    let new_target = max_target.min(target);
    let new_source = cutoff.saturating_sub(new_target).min(source);
    (new_source, new_target)
}

/// LLaMA-Factory's `train_on_prompt` and `mask_history` (they exclude each other).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Masking {
    /// Learn the prompts too (their labels are their ids).
    pub train_on_prompt: bool,
    /// Learn only the last answer; truncation keeps the last turns first; reasoning templates drop
    /// the thoughts of earlier answers.
    pub mask_history: bool,
}

/// LLaMA-Factory's `remove_thought`: every `<think>\n…\n</think>\n\n` removed, then leading newlines.
fn remove_thought(content: &str) -> String {
    let (open, close) = THOUGHT;
    let mut out = String::new();
    let mut rest = content;
    while let Some(a) = rest.find(open) {
        let Some(b) = rest[a + open.len()..].find(close) else {
            break;
        };
        out.push_str(&rest[..a]);
        rest = &rest[a + open.len() + b + close.len()..];
    }
    out.push_str(rest);
    out.trim_start_matches('\n').to_string()
}

/// Encode a conversation as LLaMA-Factory's supervised processor: prompts masked with -100
/// (unless `train_on_prompt`), turns truncated to cutoff_len with `infer_seqlen`, and with
/// `mask_history` only the last answer learned, the turns taken last to first.
pub fn encode(
    tok: &TextTokenizer,
    t: &Template,
    conv: &Conversation,
    cutoff_len: usize,
    masking: Masking,
) -> Result<Example> {
    // mask_history on a reasoning template: earlier answers lose their thoughts
    // (`discarding_history_cot`, LLaMA-Factory's default preserve_thinking: false).
    let discard_cot = masking.mask_history && t.reasoning;
    let n_msgs = conv.messages.len();
    let system = if conv.system.is_empty() {
        t.default_system
    } else {
        conv.system.as_str()
    };
    let mut encoded: Vec<Vec<u32>> = Vec::new();
    for (i, (role, content)) in conv.messages.iter().enumerate() {
        let mut ids = Vec::new();
        let mut fused = String::new();
        if i == 0 {
            ids.extend(tok.slots(&t.prefix, "")?);
            if !system.is_empty() {
                if t.fuse_system {
                    for s in &t.system {
                        if let Slot::Text(x) = s {
                            fused.push_str(&x.replace("{{content}}", system));
                        }
                    }
                } else {
                    ids.extend(tok.slots(&t.system, system)?);
                }
            }
        }
        match role {
            Role::User => ids.extend(tok.slots(&t.user, &format!("{fused}{content}"))?),
            Role::Assistant if discard_cot && i + 1 < n_msgs => {
                ids.extend(tok.slots(&t.assistant, &remove_thought(content))?)
            }
            Role::Assistant => ids.extend(tok.slots(&t.assistant, content)?),
        }
        encoded.push(ids);
    }
    if t.reasoning {
        // enable_thinking (LLaMA-Factory's default): an empty thought, learned, before answers without one.
        let empty = tok.encode(&format!("{}{}", THOUGHT.0, THOUGHT.1))?;
        // With discarded history thoughts only the last answer gets one.
        let first = if discard_cot { n_msgs - 2 } else { 0 };
        for i in (first..n_msgs).step_by(2) {
            let resp = &conv.messages[i + 1].1;
            if !resp.contains(THOUGHT.0.trim()) && !resp.contains(THOUGHT.1.trim()) {
                let mut r = empty.clone();
                r.extend(&encoded[i + 1]);
                encoded[i + 1] = r;
            }
        }
    }
    let mut pairs: Vec<&[Vec<u32>]> = encoded.chunks(2).collect();
    if masking.mask_history {
        pairs.reverse(); // the last turns have priority
    }
    // Each turn's ids and labels, in the order taken.
    let mut turns: Vec<(Vec<u32>, Vec<i64>)> = Vec::new();
    let mut total = 0usize;
    for (turn, pair) in pairs.into_iter().enumerate() {
        if total >= cutoff_len {
            break;
        }
        let (src, tgt) = (&pair[0], &pair[1]);
        let (sl, tl) = infer_seqlen(src.len(), tgt.len(), cutoff_len - total);
        total += sl + tl;
        let mut ids = src[..sl].to_vec();
        ids.extend(&tgt[..tl]);
        let mut lab: Vec<i64> = if masking.train_on_prompt {
            src[..sl].iter().map(|&x| x as i64).collect()
        } else {
            vec![-100; sl]
        };
        if masking.mask_history && turn != 0 {
            lab.extend(std::iter::repeat_n(-100i64, tl));
        } else {
            lab.extend(tgt[..tl].iter().map(|&x| x as i64));
        }
        turns.push((ids, lab));
    }
    if masking.mask_history {
        turns.reverse(); // back to conversation order
    }
    let (input_ids, labels) =
        turns
            .into_iter()
            .fold((Vec::new(), Vec::new()), |(mut ids, mut lab), (i, l)| {
                ids.extend(i);
                lab.extend(l);
                (ids, lab)
            });
    Ok(Example {
        input_ids,
        labels,
        ..Default::default()
    })
}

/// One entry of dataset_info.json.
#[derive(Debug, Clone)]
struct DatasetAttr {
    file: PathBuf,
    sharegpt: bool,
    col: std::collections::HashMap<&'static str, Option<String>>,
}

fn attr(info_path: &Path, dir: &Path, name: &str, v: &Value) -> Result<DatasetAttr> {
    let bad = |m: String| Error::ckpt(info_path, format!("dataset `{name}`: {m}"));
    let file = v.get("file_name").and_then(Value::as_str).ok_or_else(|| {
        bad("has no `file_name` (hub datasets are not downloaded by lorafit)".into())
    })?;
    let formatting = v
        .get("formatting")
        .and_then(Value::as_str)
        .unwrap_or("alpaca");
    let sharegpt = match formatting {
        "alpaca" => false,
        "sharegpt" => true,
        other => {
            return Err(bad(format!(
                "formatting `{other}` is not supported (alpaca, sharegpt)"
            )));
        }
    };
    let defaults: &[(&'static str, Option<&str>)] = &[
        ("prompt", Some("instruction")),
        ("query", Some("input")),
        ("response", Some("output")),
        ("history", None),
        ("system", None),
        ("messages", Some("conversations")),
        ("role_tag", Some("from")),
        ("content_tag", Some("value")),
        ("user_tag", Some("human")),
        ("assistant_tag", Some("gpt")),
        ("system_tag", Some("system")),
    ];
    let mut col = std::collections::HashMap::new();
    for (k, d) in defaults {
        let given = v
            .get("columns")
            .and_then(|c| c.get(*k))
            .or_else(|| v.get("tags").and_then(|c| c.get(*k)));
        let val = match given {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Null) => None,
            Some(other) => return Err(bad(format!("`{k}` must be a string, got {other}"))),
            None => d.map(str::to_string),
        };
        col.insert(*k, val);
    }
    Ok(DatasetAttr {
        file: dir.join(file),
        sharegpt,
        col,
    })
}

fn rows(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::ckpt(path, format!("not valid JSON: {e}")))?;
        Ok(v.as_array().cloned().unwrap_or_default())
    } else {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| Error::Data {
                    path: path.to_path_buf(),
                    what: format!("line {}", i + 1),
                    msg: format!("not valid JSON: {e}"),
                })
            })
            .collect()
    }
}

fn text_field(path: &Path, row: usize, v: &Value, key: &str) -> Result<Option<String>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(Error::Data {
            path: path.to_path_buf(),
            what: format!("row {row}"),
            msg: format!("`{key}` must be a string, got {other}"),
        }),
    }
}

fn to_conversation(a: &DatasetAttr, row: usize, v: &Value) -> Result<Conversation> {
    let path = &a.file;
    let err = |m: String| Error::Data {
        path: path.clone(),
        what: format!("row {row}"),
        msg: m,
    };
    if !v.is_object() || v.as_object().is_some_and(|o| o.is_empty()) {
        return Err(err(format!(
            "is {v}, not an object with the dataset's columns"
        )));
    }
    let col = |k: &str| a.col.get(k).cloned().flatten();
    if !a.sharegpt {
        let mut messages = Vec::new();
        if let Some(h) = col("history")
            && let Some(hist) = v.get(&h).and_then(Value::as_array)
        {
            for pair in hist {
                let p = pair.as_array().filter(|p| p.len() == 2).ok_or_else(|| {
                    err(format!("`{h}` must be a list of [prompt, response] pairs"))
                })?;
                let s = |x: &Value| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| err(format!("`{h}` entries must be strings")))
                };
                messages.push((Role::User, s(&p[0])?));
                messages.push((Role::Assistant, s(&p[1])?));
            }
        }
        let mut query = Vec::new();
        for k in ["prompt", "query"] {
            if let Some(c) = col(k)
                && let Some(t) = text_field(path, row, v, &c)?
                && !t.is_empty()
            {
                query.push(t);
            }
        }
        let resp_col = col("response").unwrap_or_else(|| "output".into());
        let response = text_field(path, row, v, &resp_col)?
            .ok_or_else(|| err(format!("has no `{resp_col}` (the response to learn)")))?;
        if query.is_empty() {
            return Err(err(format!(
                "has neither `{}` nor `{}` (the prompt)",
                col("prompt").unwrap_or_default(),
                col("query").unwrap_or_default()
            )));
        }
        messages.push((Role::User, query.join("\n")));
        messages.push((Role::Assistant, response));
        let system = match col("system") {
            Some(c) => text_field(path, row, v, &c)?.unwrap_or_default(),
            None => String::new(),
        };
        return Ok(Conversation { system, messages });
    }
    let mcol = col("messages").unwrap_or_else(|| "conversations".into());
    let msgs = v
        .get(&mcol)
        .and_then(Value::as_array)
        .ok_or_else(|| err(format!("has no `{mcol}` list")))?;
    let (role_tag, content_tag) = (
        col("role_tag").unwrap_or_default(),
        col("content_tag").unwrap_or_default(),
    );
    let (user, assistant) = (
        col("user_tag").unwrap_or_default(),
        col("assistant_tag").unwrap_or_default(),
    );
    let system_tag = col("system_tag");
    let mut system = match col("system") {
        Some(c) => text_field(path, row, v, &c)?.unwrap_or_default(),
        None => String::new(),
    };
    let mut messages = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let role = m
            .get(&role_tag)
            .and_then(Value::as_str)
            .ok_or_else(|| err(format!("message {} has no string `{role_tag}`", i + 1)))?;
        let content = m
            .get(&content_tag)
            .and_then(Value::as_str)
            .ok_or_else(|| err(format!("message {} has no string `{content_tag}`", i + 1)))?;
        if i == 0 && system_tag.as_deref() == Some(role) {
            system = content.to_string();
            continue;
        }
        let want = if messages.len() % 2 == 0 {
            &user
        } else {
            &assistant
        };
        if role != want {
            return Err(err(format!(
                "message {} has role `{role}` where `{want}` was expected (turns must alternate {user}/{assistant})",
                i + 1
            )));
        }
        messages.push((
            if messages.len() % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            },
            content.to_string(),
        ));
    }
    if messages.is_empty() || messages.len() % 2 != 0 {
        return Err(err(format!(
            "has {} messages after the system prompt; it needs user/assistant pairs ending with the assistant",
            messages.len()
        )));
    }
    Ok(Conversation { system, messages })
}

/// Read the conversations of one dataset in `dataset_dir/dataset_info.json`.
pub fn conversations(dataset_dir: &Path, name: &str) -> Result<Vec<Conversation>> {
    let info_path = dataset_dir.join("dataset_info.json");
    let text = std::fs::read_to_string(&info_path).map_err(|e| {
        Error::Invalid(format!(
            "`dataset: {name}` is not a file, so it must be a name in {}, which cannot be read: {e}",
            info_path.display()
        ))
    })?;
    let info: Value = serde_json::from_str(&text)
        .map_err(|e| Error::ckpt(&info_path, format!("not valid JSON: {e}")))?;
    let entry = info.get(name).ok_or_else(|| {
        let known: Vec<&str> = info
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        Error::Invalid(format!(
            "`dataset: {name}` is not in {} (it has: {})",
            info_path.display(),
            known.join(", ")
        ))
    })?;
    let a = attr(&info_path, dataset_dir, name, entry)?;
    let rows = rows(&a.file)?;
    if rows.is_empty() {
        return Err(Error::Data {
            path: a.file.clone(),
            what: "the file".into(),
            msg: "has no rows".into(),
        });
    }
    rows.iter()
        .enumerate()
        .map(|(i, v)| to_conversation(&a, i + 1, v))
        .collect()
}

/// Load `dataset` (comma-separated names) from `dataset_dir/dataset_info.json` and encode it with
/// `cutoff_len`; also returns the pad token id.
pub fn load_named(args: &TrainArgs, cutoff_len: usize) -> Result<(Vec<Example>, u32)> {
    let template = Template::get(&args.template)?;
    let tok = TextTokenizer::load(&args.model_dir, &template)?;
    let mut out = Vec::new();
    for name in args
        .dataset
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        for conv in conversations(&args.dataset_dir, name)? {
            out.push(encode(&tok, &template, &conv, cutoff_len, args.masking)?);
        }
    }
    Ok((out, tok.pad_id.unwrap_or(0)))
}
