//! LLaMA-Factory's chat templates, as data: every template its `template.py` registers
//! (data/llamafactory_templates.json, written by scripts/extract_lf_templates.py), encoded the way
//! its `Template`, `Llama2Template`, `ReasoningTemplate`, `Glm47ReasoningTemplate` and
//! `MossVLTemplate` classes encode a conversation.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::tokenizer::TextTokenizer;
use crate::tools;

/// One piece of a formatter: text with `{{content}}` (and `{{idx}}`), a token by name, or the
/// tokenizer's bos / eos token.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Slot {
    Text(String),
    Token { token: String },
    Special { special: String },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Formatter {
    pub slots: Vec<Slot>,
    #[serde(default)]
    pub tool_format: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ToolsFormatter {
    pub tool_format: Option<String>,
}

/// The Template subclass a registration uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Base,
    /// The system text is fused into the first user message.
    Llama2,
    /// Thoughts: an empty one added to answers without one, earlier ones dropped.
    Reasoning,
    /// As reasoning, but an empty thought is only the closing word.
    Glm47Reasoning,
    /// As base, but a tool text without a system prompt loses its leading newlines.
    MossVl,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MmPlugin {
    pub name: String,
    pub image_token: Option<String>,
    pub video_token: Option<String>,
    pub audio_token: Option<String>,
}

/// A registered template, with LLaMA-Factory's field names.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Template {
    #[serde(skip)]
    pub name: String,
    pub class: Class,
    pub format_user: Formatter,
    pub format_assistant: Formatter,
    pub format_system: Formatter,
    pub format_function: Formatter,
    pub format_observation: Formatter,
    pub format_tools: ToolsFormatter,
    pub format_prefix: Formatter,
    pub default_system: String,
    pub stop_words: Vec<String>,
    pub thought_words: (String, String),
    pub tool_call_words: (String, String),
    pub efficient_eos: bool,
    pub replace_eos: bool,
    /// `enable_thinking` (reasoning templates take the data argument; LLaMA-Factory's default true).
    pub enable_thinking: Option<bool>,
    pub preserve_thinking: bool,
    pub mm_plugin: MmPlugin,
    /// The date the llama3 tool prompt prints (`%d %b %Y`, today unless set).
    #[serde(skip)]
    pub today: String,
}

/// data/llamafactory_templates.json.
#[derive(Debug, Deserialize)]
pub struct Registry {
    pub source: String,
    pub tool_formats: Vec<String>,
    pub tool_prompts: BTreeMap<String, String>,
    pub templates: BTreeMap<String, Template>,
}

static REGISTRY: OnceLock<std::result::Result<Registry, String>> = OnceLock::new();

/// The templates LLaMA-Factory registers, parsed once.
pub fn registry() -> Result<&'static Registry> {
    REGISTRY
        .get_or_init(|| {
            serde_json::from_str(include_str!("../data/llamafactory_templates.json"))
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::Invalid(format!("the template data is broken: {e}")))
}

/// A message of LLaMA-Factory's normal form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
    Observation,
    Function,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Observation => "observation",
            Role::Function => "function",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
        }
    }
}

/// An element after a formatter is applied.
#[derive(Debug, Clone, PartialEq)]
enum Elem {
    Text(String),
    Token(String),
    Special(String),
}

/// `strftime("%d %b %Y")` of today (UTC).
pub fn today_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    date_of_days((secs / 86_400) as i64)
}

/// Days since 1970-01-01 → `DD Mon YYYY` (Howard Hinnant's civil-from-days).
pub fn date_of_days(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!("{d:02} {} {y}", MONTHS[(m - 1) as usize])
}

impl Template {
    /// A template by its LLaMA-Factory name.
    pub fn get(name: &str) -> Result<Template> {
        let reg = registry()?;
        let mut t = reg.templates.get(name).cloned().ok_or_else(|| {
            let stem: String = name.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
            let close: Vec<&str> = reg
                .templates
                .keys()
                .map(String::as_str)
                .filter(|k| stem.len() >= 2 && k.starts_with(&stem))
                .take(12)
                .collect();
            Error::Invalid(format!(
                "`template: {name}` is not a LLaMA-Factory template{} ({} are known; `lorafit templates` lists them)",
                if close.is_empty() {
                    String::new()
                } else {
                    format!(" — similar: {}", close.join(", "))
                },
                reg.templates.len()
            ))
        })?;
        t.name = name.to_string();
        t.today = today_utc();
        Ok(t)
    }

    /// Every template name.
    pub fn names() -> Result<Vec<&'static str>> {
        Ok(registry()?.templates.keys().map(String::as_str).collect())
    }

    pub fn is_reasoning(&self) -> bool {
        matches!(self.class, Class::Reasoning | Class::Glm47Reasoning)
    }

    /// LLaMA-Factory's `tool_format` data argument: both tool formatters use it, the function
    /// formatter with the default slots.
    pub fn set_tool_format(&mut self, format: &str) {
        let mut slots = vec![Slot::Text("{{content}}".into())];
        if !self.efficient_eos {
            slots.push(Slot::Special {
                special: "eos_token".into(),
            });
        }
        self.format_function = Formatter {
            slots,
            tool_format: Some(format.to_string()),
        };
        self.format_tools.tool_format = Some(format.to_string());
    }

    fn apply(f: &Formatter, content: &str, idx: Option<&str>) -> Vec<Elem> {
        f.slots
            .iter()
            .map(|s| match s {
                Slot::Text(t) => {
                    let t = t.replacen("{{content}}", content, 1);
                    Elem::Text(match idx {
                        Some(i) => t.replacen("{{idx}}", i, 1),
                        None => t,
                    })
                }
                Slot::Token { token } => Elem::Token(token.clone()),
                Slot::Special { special } => Elem::Special(special.clone()),
            })
            .collect()
    }

    /// The first element of a formatter's output as text (Llama2Template's fused system).
    fn apply_text(f: &Formatter, content: &str) -> String {
        match Self::apply(f, content, None).into_iter().next() {
            Some(Elem::Text(t)) => t,
            _ => String::new(),
        }
    }

    fn ids(tok: &TextTokenizer, elems: &[Elem]) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        for e in elems {
            match e {
                Elem::Text(t) => out.extend(tok.encode(t)?),
                Elem::Token(t) => out.push(tok.token_id(t).ok_or_else(|| {
                    Error::Invalid(format!(
                        "the template names the token `{t}`, which the tokenizer does not have"
                    ))
                })?),
                Elem::Special(s) if s == "bos_token" => out.extend(tok.bos_id),
                Elem::Special(s) if s == "eos_token" => out.extend(tok.eos_id),
                Elem::Special(_) => {}
            }
        }
        Ok(out)
    }

    fn tool_text(&self, tools: &str) -> Result<String> {
        if tools.is_empty() {
            return Ok(String::new());
        }
        let format = self
            .format_tools
            .tool_format
            .as_deref()
            .unwrap_or("default");
        tools::format_tools(format, tools, &self.today)
    }

    fn function(&self, content: &str, with_words: bool) -> Result<Vec<Elem>> {
        let format = self
            .format_function
            .tool_format
            .as_deref()
            .unwrap_or("default");
        let (tw, tcw) = (&self.thought_words, &self.tool_call_words);
        let text = if with_words {
            tools::function_content(
                format,
                content,
                Some((tw.0.as_str(), tw.1.as_str())),
                Some((tcw.0.as_str(), tcw.1.as_str())),
            )?
        } else {
            tools::function_content(format, content, None, None)?
        };
        Ok(Self::apply(&self.format_function, &text, None))
    }

    /// `_encode`: each message's token ids; the first carries the prefix and the system (+ tools).
    fn encode_messages(
        &self,
        tok: &TextTokenizer,
        messages: &[Message],
        system: &str,
        tools: &str,
    ) -> Result<Vec<Vec<u32>>> {
        let system = if system.is_empty() {
            self.default_system.as_str()
        } else {
            system
        };
        let mut out = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let mut elems = Vec::new();
            let mut fused = String::new();
            if i == 0 {
                elems.extend(Self::apply(&self.format_prefix, "", None));
                if !system.is_empty() || !tools.is_empty() {
                    let mut tool_text = self.tool_text(tools)?;
                    if self.class == Class::MossVl && !tools.is_empty() && system.is_empty() {
                        tool_text = tool_text.trim_start_matches('\n').to_string();
                    }
                    let sys = format!("{system}{tool_text}");
                    if self.class == Class::Llama2 {
                        fused = Self::apply_text(&self.format_system, &sys);
                    } else {
                        elems.extend(Self::apply(&self.format_system, &sys, None));
                    }
                }
            }
            let llama2 = self.class == Class::Llama2;
            match m.role {
                Role::User if llama2 => elems.extend(Self::apply(
                    &self.format_user,
                    &format!("{fused}{}", m.content),
                    None,
                )),
                Role::User => {
                    let idx = (i / 2).to_string();
                    elems.extend(Self::apply(&self.format_user, &m.content, Some(&idx)))
                }
                Role::Assistant => {
                    elems.extend(Self::apply(&self.format_assistant, &m.content, None))
                }
                Role::Observation => {
                    elems.extend(Self::apply(&self.format_observation, &m.content, None))
                }
                Role::Function => elems.extend(self.function(&m.content, !llama2)?),
            }
            out.push(Self::ids(tok, &elems)?);
        }
        Ok(out)
    }

    /// `add_thought()`: the empty thought.
    fn empty_thought(&self) -> String {
        if self.class == Class::Glm47Reasoning {
            self.thought_words.1.clone()
        } else {
            format!("{}{}", self.thought_words.0, self.thought_words.1)
        }
    }

    /// `remove_thought`: every `open…close` removed, then leading newlines.
    pub fn remove_thought(&self, content: &str) -> String {
        let (open, close) = (&self.thought_words.0, &self.thought_words.1);
        let mut out = String::new();
        let mut rest = content;
        while let Some((whole, _)) = tools::find_between(rest, open, close) {
            if whole.is_empty() {
                break;
            }
            let at = rest.find(whole).unwrap_or(0);
            out.push_str(&rest[..at]);
            rest = &rest[at + whole.len()..];
        }
        out.push_str(rest);
        out.trim_start_matches('\n').to_string()
    }

    fn has_thought(&self, content: &str) -> bool {
        content.contains(self.thought_words.0.trim())
            || content.contains(self.thought_words.1.trim())
    }

    /// `encode_multiturn`: (prompt ids, response ids) per turn.
    pub fn encode_multiturn(
        &self,
        tok: &TextTokenizer,
        messages: &[Message],
        system: &str,
        tools: &str,
        discard_history_cot: bool,
    ) -> Result<Vec<(Vec<u32>, Vec<u32>)>> {
        let pairs = |enc: Vec<Vec<u32>>| -> Vec<(Vec<u32>, Vec<u32>)> {
            let mut it = enc.into_iter();
            let mut out = Vec::new();
            while let (Some(a), Some(b)) = (it.next(), it.next()) {
                out.push((a, b));
            }
            out
        };
        if !self.is_reasoning() {
            return Ok(pairs(self.encode_messages(tok, messages, system, tools)?));
        }
        let mut msgs = messages.to_vec();
        let n = msgs.len();
        if self.enable_thinking == Some(false) {
            for i in (1..n).step_by(2) {
                msgs[i].content = self.remove_thought(&msgs[i].content);
            }
        }
        if discard_history_cot {
            for i in (1..n.saturating_sub(2)).step_by(2) {
                msgs[i].content = self.remove_thought(&msgs[i].content);
            }
        }
        let mut enc = self.encode_messages(tok, &msgs, system, tools)?;
        let turns: Vec<usize> = if discard_history_cot {
            vec![n.saturating_sub(2)]
        } else {
            (0..n).step_by(2).collect()
        };
        let thought = tok.encode(&self.empty_thought())?;
        for i in turns {
            if i + 1 >= n || self.has_thought(&msgs[i + 1].content) {
                continue;
            }
            if self.enable_thinking != Some(true) {
                enc[i].extend(&thought);
            } else {
                let mut r = thought.clone();
                r.extend(&enc[i + 1]);
                enc[i + 1] = r;
            }
        }
        Ok(pairs(enc))
    }

    /// `encode_oneturn`: the whole prompt and the last response.
    pub fn encode_oneturn(
        &self,
        tok: &TextTokenizer,
        messages: &[Message],
        system: &str,
        tools: &str,
    ) -> Result<(Vec<u32>, Vec<u32>)> {
        let mut msgs = messages.to_vec();
        let n = msgs.len();
        if self.is_reasoning() {
            if !self.preserve_thinking {
                for i in (1..n.saturating_sub(2)).step_by(2) {
                    msgs[i].content = self.remove_thought(&msgs[i].content);
                }
            }
            if self.enable_thinking == Some(false)
                && let Some(last) = msgs.last_mut()
            {
                last.content = self.remove_thought(&last.content);
            }
        }
        let mut enc = self.encode_messages(tok, &msgs, system, tools)?;
        let mut response = enc.pop().unwrap_or_default();
        let mut prompt: Vec<u32> = enc.concat();
        if self.is_reasoning()
            && let Some(last) = msgs.last()
            && !self.has_thought(&last.content)
        {
            let thought = tok.encode(&self.empty_thought())?;
            if self.enable_thinking != Some(true) {
                prompt.extend(thought);
            } else {
                let mut r = thought;
                r.extend(response);
                response = r;
            }
        }
        Ok((prompt, response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_has_the_templates_people_use() {
        for name in [
            "qwen3",
            "qwen3_nothink",
            "qwen3_5",
            "qwen3_5_nothink",
            "qwen3_vl",
            "qwen3_vl_nothink",
            "qwen2_vl",
            "qwen",
            "llama2",
            "llama3",
            "llama4",
            "mistral",
            "mistral_small",
            "ministral3",
            "gemma",
            "gemma2",
            "gemma3",
            "glm4",
            "glm4_moe",
            "deepseek3",
            "deepseekr1",
            "phi4",
            "yi",
            "chatml",
            "gpt_oss",
            "default",
            "empty",
        ] {
            Template::get(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(Template::names().expect("names").len() > 100);
    }

    #[test]
    fn unknown_template_names_similar_ones() {
        let e = Template::get("qwen9").expect_err("unknown").to_string();
        assert!(
            e.contains("qwen3") && e.contains("not a LLaMA-Factory template"),
            "{e}"
        );
    }

    #[test]
    fn dates_as_strftime() {
        assert_eq!(date_of_days(0), "01 Jan 1970");
        assert_eq!(date_of_days(20_789), "02 Dec 2026");
        assert_eq!(date_of_days(11_016), "29 Feb 2000");
    }
}
