//! The model's tokenizer.json with the special tokens tokenizer_config.json names, fixed up for a
//! template as LLaMA-Factory's `fix_special_tokens` does: eos replaced by the template's first stop
//! word, `<|endoftext|>` when there is no eos, pad = eos when missing, the other stop words made
//! special tokens.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{Error, Result};
use crate::template::Template;

#[derive(Debug, Clone)]
pub struct TextTokenizer {
    tok: Tokenizer,
    pub path: PathBuf,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub pad_id: Option<u32>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// tokenizer_config.json's `add_bos_token` (the pretraining processor prepends bos).
    pub add_bos_token: bool,
}

fn special(cfg: &Value, key: &str) -> Option<String> {
    match cfg.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

impl TextTokenizer {
    /// `model_dir/tokenizer.json` (+ tokenizer_config.json), fixed for `template` (None: as is).
    pub fn load(model_dir: &Path, template: Option<&Template>) -> Result<Self> {
        let path = model_dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(Error::Invalid(format!(
                "{} is missing: a text dataset needs the model's tokenizer (or give a pre-tokenized .jsonl)",
                path.display()
            )));
        }
        let mut tok = Tokenizer::from_file(&path)
            .map_err(|e| Error::file(&path, format!("cannot be read as a tokenizer: {e}")))?;
        let cfg_path = model_dir.join("tokenizer_config.json");
        let cfg: Value = match std::fs::read_to_string(&cfg_path) {
            Ok(t) => serde_json::from_str(&t)
                .map_err(|e| Error::file(&cfg_path, format!("not valid JSON: {e}")))?,
            Err(_) => Value::Null,
        };
        let mut out = TextTokenizer {
            path: path.clone(),
            bos_id: None,
            eos_id: None,
            pad_id: None,
            bos_token: special(&cfg, "bos_token"),
            eos_token: special(&cfg, "eos_token"),
            add_bos_token: cfg
                .get("add_bos_token")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            tok: tok.clone(),
        };
        let named = |tok: &Tokenizer, n: &Option<String>| -> Result<Option<u32>> {
            match n {
                None => Ok(None),
                Some(n) => tok.token_to_id(n).map(Some).ok_or_else(|| {
                    Error::file(
                        &cfg_path,
                        format!("names the token `{n}`, which tokenizer.json does not have"),
                    )
                }),
            }
        };
        let mut stop_words: Vec<String> = Vec::new();
        let original_eos = out.eos_token.clone();
        if let Some(t) = template {
            stop_words = t.stop_words.clone();
            if t.replace_eos {
                if stop_words.is_empty() {
                    return Err(Error::Invalid(format!(
                        "template `{}` replaces eos but has no stop words",
                        t.name
                    )));
                }
                out.eos_token = Some(stop_words.remove(0));
            }
        }
        if out.eos_token.is_none() {
            out.eos_token = Some("<|endoftext|>".into());
        }
        // LLaMA-Factory adds missing tokens and asks for resize_vocab; lorafit needs them present.
        let must_have = |tok: &Tokenizer, name: &str| -> Result<u32> {
            tok.token_to_id(name).ok_or_else(|| {
                Error::Invalid(format!(
                    "template `{}` needs the token `{name}`, which {} does not have (LLaMA-Factory would add it and need `resize_vocab: true`; lorafit does not grow the vocabulary)",
                    template.map(|t| t.name.as_str()).unwrap_or("?"),
                    path.display()
                ))
            })
        };
        if let Some(e) = out.eos_token.clone()
            && out.eos_token != original_eos
        {
            // `add_special_tokens({"eos_token": …})`: the new eos becomes an added special token.
            must_have(&tok, &e)?;
            tok.add_special_tokens(&[AddedToken::from(e, true)]);
        }
        for w in &stop_words {
            must_have(&tok, w)?;
        }
        if !stop_words.is_empty() {
            let added: Vec<AddedToken> = stop_words
                .iter()
                .map(|w| AddedToken::from(w.clone(), true))
                .collect();
            tok.add_special_tokens(&added);
        }
        out.bos_id = named(&tok, &out.bos_token)?;
        out.eos_id = named(&tok, &out.eos_token)?;
        out.pad_id = named(&tok, &special(&cfg, "pad_token"))?.or(out.eos_id);
        out.tok = tok;
        Ok(out)
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

    /// `convert_tokens_to_ids(token)`.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tok.token_to_id(token)
    }

    /// The text of ids (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.decode_with(ids, false)
    }

    /// The text of ids, special tokens left out when `skip_special` (LLaMA-Factory's
    /// `skip_special_tokens`, on by default in its chat).
    pub fn decode_with(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.tok
            .decode(ids, skip_special)
            .map_err(|e| Error::Invalid(format!("decoding: {e}")))
    }

    pub fn vocab_size(&self) -> usize {
        self.tok.get_vocab_size(true)
    }
}
