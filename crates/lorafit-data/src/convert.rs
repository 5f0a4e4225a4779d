//! LLaMA-Factory's dataset converters (alpaca, sharegpt, openai): a row → the aligned form
//! (`_prompt`, `_response`, `_system`, `_tools`). Rows LLaMA-Factory would skip as "abnormal" are
//! kept as empty with the reason, so the caller can say how many were dropped and why.

use crate::error::{Error, Result};
use crate::info::{DatasetAttr, Formatting};
use crate::json::Json;
use crate::template::{Message, Role};

/// A row in LLaMA-Factory's aligned form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Aligned {
    /// user / assistant / observation / function messages, 2T − 1 of them for a valid row.
    pub prompt: Vec<Message>,
    /// One message (sft), two (chosen, rejected; or KTO's pair with an empty side), or none.
    pub response: Vec<Message>,
    pub system: String,
    /// The `tools` column: a JSON list as text, or empty.
    pub tools: String,
    /// Why LLaMA-Factory would skip this row (empty prompt and response), if it would.
    pub broken: Option<String>,
    /// KTO: whether the response is desirable (`kto_tag`).
    pub kto_tag: Option<bool>,
}

fn col<'a>(row: &'a Json, name: &Option<String>) -> Option<&'a Json> {
    name.as_ref()
        .and_then(|n| row.get(n))
        .filter(|v| !v.is_null())
}

/// A text field: a string, null/missing as empty; other types are an error naming the column.
fn text_of(v: Option<&Json>, what: &str) -> std::result::Result<String, String> {
    match v {
        None => Ok(String::new()),
        Some(Json::Str(s)) => Ok(s.clone()),
        Some(other) => Err(format!("`{what}` must be a string, got {}", other.dumps())),
    }
}

/// The tools column as the JSON text LLaMA-Factory's tool formatter parses (lists and objects,
/// which LLaMA-Factory only accepts in the openai format, are written out the same way).
fn tools_of(row: &Json, a: &DatasetAttr) -> String {
    match col(row, &a.columns.tools) {
        None => String::new(),
        Some(Json::Str(s)) => s.clone(),
        Some(other) => other.dumps(),
    }
}

/// Convert one row (1-based `row_no` for messages).
pub fn convert(a: &DatasetAttr, row: &Json, row_no: usize) -> Result<Aligned> {
    let err = |m: String| Error::data(&a.path, format!("row {row_no}"), m);
    if row.as_object().is_none_or(|o| o.is_empty()) {
        return Err(err(format!(
            "is {}, not an object with the dataset's columns",
            row.dumps()
        )));
    }
    let out = match a.formatting {
        Formatting::Alpaca => alpaca(a, row),
        Formatting::Sharegpt => sharegpt(a, row, false),
        Formatting::Openai => sharegpt(a, row, true),
    };
    out.map_err(err)
}

fn kto(a: &DatasetAttr, row: &Json) -> Option<bool> {
    match col(row, &a.columns.kto_tag) {
        Some(Json::Bool(b)) => Some(*b),
        _ => None,
    }
}

/// KTO's response: the answer and an empty one, desirable first.
fn kto_response(answer: Message, desirable: bool) -> Vec<Message> {
    let empty = Message::new(Role::Assistant, "");
    if desirable {
        vec![answer, empty]
    } else {
        vec![empty, answer]
    }
}

fn alpaca(a: &DatasetAttr, row: &Json) -> std::result::Result<Aligned, String> {
    let c = &a.columns;
    let mut prompt = Vec::new();
    if let Some(Json::Array(hist)) = col(row, &c.history) {
        let h = c.history.as_deref().unwrap_or("history");
        for pair in hist {
            let p = pair
                .as_array()
                .filter(|p| p.len() == 2)
                .ok_or_else(|| format!("`{h}` must be a list of [prompt, response] pairs"))?;
            prompt.push(Message::new(Role::User, text_of(Some(&p[0]), h)?));
            prompt.push(Message::new(Role::Assistant, text_of(Some(&p[1]), h)?));
        }
    }
    let mut query = Vec::new();
    for name in [&c.prompt, &c.query] {
        if let Some(v) = col(row, name)
            && v.truthy()
        {
            query.push(text_of(Some(v), name.as_deref().unwrap_or(""))?);
        }
    }
    prompt.push(Message::new(Role::User, query.join("\n")));
    let kto_tag = kto(a, row);
    let response = if let Some(desirable) = kto_tag {
        let r = text_of(col(row, &c.response), c.response.as_deref().unwrap_or(""))?;
        kto_response(Message::new(Role::Assistant, r), desirable)
    } else if a.ranking
        && let (Some(Json::Str(ch)), Some(Json::Str(rj))) =
            (col(row, &c.chosen), col(row, &c.rejected))
    {
        vec![
            Message::new(Role::Assistant, ch.clone()),
            Message::new(Role::Assistant, rj.clone()),
        ]
    } else if let Some(Json::Str(r)) = col(row, &c.response) {
        vec![Message::new(Role::Assistant, r.clone())]
    } else {
        Vec::new()
    };
    Ok(Aligned {
        prompt,
        response,
        system: text_of(col(row, &c.system), c.system.as_deref().unwrap_or(""))?,
        tools: tools_of(row, a),
        broken: None,
        kto_tag,
    })
}

fn role_of(a: &DatasetAttr, tag: &str) -> Option<Role> {
    let t = &a.tags;
    // The last matching entry wins, as in LLaMA-Factory's tag_mapping dict.
    let mut role = None;
    for (name, r) in [
        (&t.user_tag, Role::User),
        (&t.assistant_tag, Role::Assistant),
        (&t.observation_tag, Role::Observation),
        (&t.function_tag, Role::Function),
    ] {
        if name.as_deref() == Some(tag) {
            role = Some(r);
        }
    }
    role
}

fn sharegpt(a: &DatasetAttr, row: &Json, openai: bool) -> std::result::Result<Aligned, String> {
    let t = &a.tags;
    let mcol = a.columns.messages.as_deref().unwrap_or("conversations");
    let messages = col(row, &a.columns.messages)
        .and_then(Json::as_array)
        .ok_or_else(|| format!("has no `{mcol}` list"))?;
    let role_tag = t.role_tag.as_deref().unwrap_or("");
    let content_tag = t.content_tag.as_deref().unwrap_or("");
    let role_at = |m: &Json, i: usize| -> std::result::Result<String, String> {
        m.get(role_tag)
            .and_then(Json::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("message {} has no string `{role_tag}`", i + 1))
    };
    let content_at = |m: &Json, i: usize| -> std::result::Result<String, String> {
        match m.get(content_tag) {
            Some(Json::Str(s)) => Ok(s.clone()),
            None | Some(Json::Null) if openai => Ok(String::new()),
            _ => Err(format!("message {} has no string `{content_tag}`", i + 1)),
        }
    };
    let mut msgs: &[Json] = messages;
    let mut system = String::new();
    let mut from_first = false;
    if let (Some(st), Some(first)) = (&t.system_tag, msgs.first())
        && role_at(first, 0)? == *st
    {
        system = content_at(first, 0)?;
        msgs = &msgs[1..];
        from_first = true;
    }
    if !from_first {
        system = text_of(
            col(row, &a.columns.system),
            a.columns.system.as_deref().unwrap_or(""),
        )?;
    }
    let offset = usize::from(from_first);
    let mut aligned: Vec<Message> = Vec::new();
    let mut broken: Option<String> = None;
    if openai {
        let mut tool_responses: Vec<String> = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            let mut role = role_at(m, i + offset)?;
            let mut content = content_at(m, i + offset)?;
            if (Some(role.as_str()) == t.assistant_tag.as_deref()
                || Some(role.as_str()) == t.function_tag.as_deref())
                && let Some(Json::Array(calls)) = m.get("tool_calls")
                && !calls.is_empty()
            {
                {
                    let fns: Vec<Json> = calls
                        .iter()
                        .map(|c| c.get("function").cloned().unwrap_or(Json::Null))
                        .collect();
                    content = Json::Array(fns).dumps();
                    role = t.function_tag.clone().unwrap_or_default();
                }
            }
            if Some(role.as_str()) == t.observation_tag.as_deref() {
                tool_responses.push(content);
                continue;
            } else if !tool_responses.is_empty() {
                aligned.push(Message::new(
                    Role::Observation,
                    tool_responses.join("\n</tool_response>\n<tool_response>\n"),
                ));
                tool_responses.clear();
            }
            let r = role_of(a, &role).ok_or_else(|| {
                format!("message {} has the unknown role `{role}`", i + 1 + offset)
            })?;
            aligned.push(Message::new(r, content));
        }
        for (i, m) in aligned.iter().enumerate() {
            let ok = if i % 2 == 0 {
                matches!(m.role, Role::User | Role::Observation)
            } else {
                matches!(m.role, Role::Assistant | Role::Function)
            };
            if !ok {
                broken = Some(format!(
                    "message {} is a {} message where a {} was expected",
                    i + 1 + offset,
                    m.role.name(),
                    if i % 2 == 0 {
                        "user or observation"
                    } else {
                        "assistant or function"
                    }
                ));
                break;
            }
        }
    } else {
        for (i, m) in msgs.iter().enumerate() {
            let role = role_at(m, i + offset)?;
            let accept = if i % 2 == 0 {
                [&t.user_tag, &t.observation_tag]
            } else {
                [&t.assistant_tag, &t.function_tag]
            };
            if !accept.iter().any(|x| x.as_deref() == Some(role.as_str())) {
                let want: Vec<&str> = accept.iter().filter_map(|x| x.as_deref()).collect();
                broken = Some(format!(
                    "message {} has the role `{role}` where {} was expected",
                    i + 1 + offset,
                    want.iter()
                        .map(|w| format!("`{w}`"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ));
                break;
            }
            let r = role_of(a, &role).unwrap_or(Role::User);
            aligned.push(Message::new(r, content_at(m, i + offset)?));
        }
    }
    let n = aligned.len();
    if broken.is_none()
        && ((!a.ranking && !n.is_multiple_of(2)) || (a.ranking && n.is_multiple_of(2)))
    {
        broken = Some(format!(
            "has {n} messages after the system prompt; {}",
            if a.ranking {
                "a ranking row needs an odd number (the prompt turns), then `chosen` / `rejected`"
            } else {
                "it needs user/assistant pairs ending with the assistant"
            }
        ));
    }
    let mut tools = tools_of(row, a);
    let kto_tag = kto(a, row);
    let (prompt, response) = if broken.is_some() {
        (Vec::new(), Vec::new())
    } else if let Some(desirable) = kto_tag {
        let last = aligned
            .pop()
            .unwrap_or_else(|| Message::new(Role::Assistant, ""));
        (aligned, kto_response(last, desirable))
    } else if a.ranking
        && let (Some(ch), Some(rj)) = (col(row, &a.columns.chosen), col(row, &a.columns.rejected))
        && ch.as_object().is_some()
        && rj.as_object().is_some()
    {
        let mut resp = Vec::new();
        for (what, m) in [("chosen", ch), ("rejected", rj)] {
            // LLaMA-Factory warns about a chosen/rejected role that is not an answer but keeps the row.
            let role = m.get(role_tag).and_then(Json::as_str).unwrap_or("");
            let content = match m.get(content_tag) {
                Some(Json::Str(s)) => s.clone(),
                _ => return Err(format!("`{what}` has no string `{content_tag}`")),
            };
            resp.push(Message::new(
                role_of(a, role).unwrap_or(Role::Assistant),
                content,
            ));
        }
        (aligned, resp)
    } else {
        let last = aligned.pop();
        (aligned, last.into_iter().collect())
    };
    if openai {
        // LLaMA-Factory's openai converter adds a short system prompt (Nemotron's switch).
        let short = "detailed thinking off";
        if system.is_empty() {
            if tools.is_empty() {
                system = short.to_string();
            }
        } else if tools.is_empty() {
            if !system.contains("detailed thinking on") && !system.contains(short) {
                system = format!("{system}\n{short}");
            }
        } else {
            system.push('\n');
        }
    }
    if broken.is_some() {
        tools.clear();
    }
    Ok(Aligned {
        prompt,
        response,
        system,
        tools,
        broken,
        kto_tag,
    })
}
