//! Tool calling as LLaMA-Factory renders it: the tool descriptions put into the system prompt
//! (`format_tools`) and an assistant's function calls (`format_function`), per tool format.
//! The prompt texts are LLaMA-Factory's own, read from data/llamafactory_templates.json.

use crate::error::{Error, Result};
use crate::json::{Json, py_float_repr};
use crate::template::registry;

/// A parsed function call: the name and the arguments as `json.dumps` printed them.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
}

/// The tool formats lorafit renders (LLaMA-Factory has more; the others are an error when a
/// dataset has tools).
pub const TOOL_FORMATS: &[&str] = &[
    "default", "gemma4", "glm4", "glm4_moe", "lfm2", "llama3", "ling", "minimax1", "minimax2",
    "mistral", "qwen", "qwen3_5", "seed_oss",
];

fn unsupported(format: &str) -> Error {
    Error::Invalid(format!(
        "tool format `{format}` is not rendered by lorafit yet (it renders {}); the dataset has tools or function calls",
        TOOL_FORMATS.join(", ")
    ))
}

/// Python's `str.format` for `{name}` fields and `{{` / `}}` escapes, in one pass.
fn py_format(template: &str, fields: &[(&str, &str)]) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
        } else if let Some(stripped) = tail.strip_prefix('{')
            && let Some(end) = stripped.find('}')
        {
            let key = &stripped[..end];
            let value = fields
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| *v)
                .ok_or_else(|| Error::Invalid(format!("tool prompt field `{key}` is not known")))?;
            out.push_str(value);
            rest = &stripped[end + 1..];
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn prompt(name: &str) -> Result<&'static str> {
    registry()?
        .tool_prompts
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "LLaMA-Factory's `{name}` tool prompt is missing from the template data"
            ))
        })
}

/// Python's `str(x)` of a JSON value, for `"{}".format(x)`.
fn py_str(v: &Json) -> String {
    match v {
        Json::Str(s) => s.clone(),
        other => py_repr(other),
    }
}

fn py_repr(v: &Json) -> String {
    match v {
        Json::Null => "None".into(),
        Json::Bool(b) => if *b { "True" } else { "False" }.into(),
        Json::Int(i) => i.to_string(),
        Json::UInt(u) => u.to_string(),
        Json::Float(f) => py_float_repr(*f),
        Json::Str(s) => {
            if s.contains('\'') && !s.contains('"') {
                format!("\"{s}\"")
            } else {
                format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
            }
        }
        Json::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Json::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{}: {}", py_repr(&Json::Str(k.clone())), py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn bad_tools(msg: impl Into<String>) -> Error {
    Error::Invalid(format!("tool description: {}", msg.into()))
}

/// `tool.get("function", "") if tool.get("type") == "function" else tool`.
fn unwrap_function(tool: &Json, default_self: bool) -> Json {
    if tool.get("type").and_then(Json::as_str) == Some("function") {
        match tool.get("function") {
            Some(f) => f.clone(),
            None if default_self => tool.clone(),
            None => Json::Str(String::new()),
        }
    } else {
        tool.clone()
    }
}

/// `tool if tool.get("type") == "function" else {"type": "function", "function": tool}`.
fn wrap_function(tool: &Json) -> Json {
    if tool.get("type").and_then(Json::as_str) == Some("function") {
        tool.clone()
    } else {
        Json::Object(vec![
            ("type".into(), Json::Str("function".into())),
            ("function".into(), tool.clone()),
        ])
    }
}

fn field<'a>(v: &'a Json, key: &str) -> Result<&'a Json> {
    v.get(key)
        .ok_or_else(|| bad_tools(format!("{} has no `{key}`", v.dumps())))
}

fn get_str(v: &Json, key: &str) -> String {
    v.get(key).map(py_str).unwrap_or_default()
}

/// The system-prompt text describing `tools` (the dataset's `tools` column: a JSON list).
pub fn format_tools(format: &str, tools_json: &str, today: &str) -> Result<String> {
    let tools = Json::parse(tools_json).map_err(|e| {
        bad_tools(format!(
            "`{tools_json}` is not valid JSON ({e}); it must be a JSON list of tools"
        ))
    })?;
    let list: Vec<Json> = match &tools {
        Json::Array(a) => a.clone(),
        Json::Object(o) if o.is_empty() => vec![],
        Json::Object(_) => vec![tools.clone()],
        _ => return Err(bad_tools(format!("`{tools_json}` is not a list of tools"))),
    };
    if list.is_empty() {
        return Ok(String::new());
    }
    let mut text = String::new();
    match format {
        "default" => {
            let mut names = Vec::new();
            for tool in &list {
                let tool = unwrap_function(tool, false);
                let params = field(&tool, "parameters")?;
                let props = field(params, "properties")?
                    .as_object()
                    .ok_or_else(|| bad_tools("`properties` must be an object"))?;
                let required: Vec<&str> = params
                    .get("required")
                    .and_then(Json::as_array)
                    .map(|a| a.iter().filter_map(Json::as_str).collect())
                    .unwrap_or_default();
                let mut args = String::new();
                for (name, param) in props {
                    let req = if required.contains(&name.as_str()) {
                        ", required"
                    } else {
                        ""
                    };
                    let enumeration = match param.get("enum") {
                        Some(e) if e.truthy() => {
                            let items = e
                                .as_array()
                                .ok_or_else(|| {
                                    bad_tools(format!("`enum` of `{name}` must be a list"))
                                })?
                                .iter()
                                .map(|x| {
                                    x.as_str().map(str::to_string).ok_or_else(|| {
                                        bad_tools(format!("`enum` of `{name}` must hold strings"))
                                    })
                                })
                                .collect::<Result<Vec<_>>>()?;
                            format!(", should be one of [{}]", items.join(", "))
                        }
                        _ => String::new(),
                    };
                    let items = match param.get("items") {
                        Some(i) if i.truthy() => {
                            format!(", where each item should be {}", get_str(i, "type"))
                        }
                        _ => String::new(),
                    };
                    args.push_str(&format!(
                        "  - {name} ({}{req}): {}{enumeration}{items}\n",
                        get_str(param, "type"),
                        get_str(param, "description")
                    ));
                }
                let name = py_str(field(&tool, "name")?);
                text.push_str(&format!(
                    "> Tool Name: {name}\nTool Description: {}\nTool Args:\n{args}\n",
                    get_str(&tool, "description")
                ));
                names.push(name);
            }
            py_format(
                prompt("default")?,
                &[("tool_text", &text), ("tool_names", &names.join(", "))],
            )
        }
        "glm4" => {
            for tool in &list {
                let tool = unwrap_function(tool, false);
                let name = py_str(field(&tool, "name")?);
                text.push_str(&format!(
                    "\n\n## {name}\n\n{}\n在调用上述函数时，请使用 Json 格式表示调用的参数。",
                    tool.dumps_indent(4)
                ));
            }
            py_format(prompt("glm4")?, &[("tool_text", &text)])
        }
        "llama3" => {
            for tool in &list {
                text.push_str(&wrap_function(tool).dumps_indent(4));
                text.push_str("\n\n");
            }
            py_format(prompt("llama3")?, &[("date", today), ("tool_text", &text)])
        }
        "mistral" => {
            let wrapped = Json::Array(list.iter().map(wrap_function).collect());
            Ok(format!(
                "[AVAILABLE_TOOLS] {}[/AVAILABLE_TOOLS]",
                wrapped.dumps()
            ))
        }
        "qwen" | "glm4_moe" => {
            for tool in &list {
                text.push('\n');
                text.push_str(&wrap_function(tool).dumps());
            }
            py_format(prompt(format)?, &[("tool_text", &text)])
        }
        "qwen3_5" => {
            for tool in &list {
                text.push('\n');
                text.push_str(&unwrap_function(tool, true).dumps());
            }
            py_format(prompt("qwen35")?, &[("tool_text", &text)])
        }
        "ling" => {
            for tool in &list {
                text.push('\n');
                text.push_str(&wrap_function(tool).dumps());
            }
            Ok(py_format(prompt("ling")?, &[("tool_text", &text)])? + "\ndetailed thinking off")
        }
        "minimax1" | "minimax2" => {
            let m2 = format == "minimax2";
            for tool in &list {
                let t = unwrap_function(tool, false).dumps();
                text.push_str(&if m2 {
                    format!("<tool>{t}</tool>\n")
                } else {
                    t + "\n"
                });
            }
            let name = if m2 { "minimax_m2" } else { "minimax_m1" };
            py_format(prompt(name)?, &[("tool_text", &text)])
        }
        "gemma4" => Ok(list
            .iter()
            .map(|t| gemma4_declaration(&unwrap_function(t, true)))
            .collect::<Result<Vec<_>>>()?
            .join("\n")),
        "lfm2" => {
            let tools = Json::Array(list.iter().map(|t| unwrap_function(t, true)).collect());
            py_format(prompt("lfm2")?, &[("tool_text", &tools.dumps())])
        }
        // Seed-OSS prints the column's JSON as parsed (a list, or a single object).
        "seed_oss" => py_format(
            prompt("seed")?,
            &[("tool_text", &format!("\n{}", tools.dumps()))],
        ),
        other => Err(unsupported(other)),
    }
}

/// `v.get(k)` when Python would find it truthy.
fn truthy<'a>(v: &'a Json, k: &str) -> Option<&'a Json> {
    v.get(k).filter(|x| x.truthy())
}

/// Gemma 4's `declaration:NAME{description:<|"|>…<|"|>,parameters:{…},response:{…}}`.
fn gemma4_declaration(f: &Json) -> Result<String> {
    const Q: &str = "<|\"|>";
    let upper = |v: &Json| py_str(v).to_uppercase();
    let mut d = format!(
        "declaration:{}{{description:{Q}{}{Q}",
        py_str(field(f, "name")?),
        get_str(f, "description")
    );
    if let Some(params) = truthy(f, "parameters") {
        let mut parts = Vec::new();
        if let Some(props) = truthy(params, "properties") {
            let props = props
                .as_object()
                .ok_or_else(|| bad_tools("`properties` must be an object"))?;
            let items: Vec<String> = props
                .iter()
                .map(|(name, schema)| {
                    let mut item = Vec::new();
                    if let Some(desc) = truthy(schema, "description") {
                        item.push(format!("description:{Q}{}{Q}", py_str(desc)));
                    }
                    if let Some(t) = truthy(schema, "type") {
                        item.push(format!("type:{Q}{}{Q}", upper(t)));
                    }
                    format!("{name}:{{{}}}", item.join(","))
                })
                .collect();
            parts.push(format!("properties:{{{}}}", items.join(",")));
        }
        if let Some(req) = truthy(params, "required") {
            let req = req
                .as_array()
                .ok_or_else(|| bad_tools("`required` must be a list"))?;
            let names: Vec<String> = req.iter().map(|r| format!("{Q}{}{Q}", py_str(r))).collect();
            parts.push(format!("required:[{}]", names.join(",")));
        }
        if let Some(t) = truthy(params, "type") {
            parts.push(format!("type:{Q}{}{Q}", upper(t)));
        }
        d.push_str(&format!(",parameters:{{{}}}", parts.join(",")));
    }
    if let Some(resp) = truthy(f, "response") {
        let mut parts = Vec::new();
        if let Some(desc) = truthy(resp, "description") {
            parts.push(format!("description:{Q}{}{Q}", py_str(desc)));
        }
        let t = resp.get("type").map(upper).unwrap_or_default();
        if t == "OBJECT" {
            parts.push(format!("type:{Q}{t}{Q}"));
        }
        d.push_str(&format!(",response:{{{}}}", parts.join(",")));
    }
    d.push('}');
    Ok(d)
}

/// Gemma 4's argument syntax: strings in `<|"|>` quotes, keys sorted, Python's `str` of numbers.
fn gemma4_value(v: &Json, escape_keys: bool) -> String {
    const Q: &str = "<|\"|>";
    match v {
        Json::Str(s) => format!("{Q}{s}{Q}"),
        Json::Bool(b) => if *b { "true" } else { "false" }.into(),
        Json::Null => "null".into(),
        Json::Object(o) => {
            let mut keys: Vec<&(String, Json)> = o.iter().collect();
            keys.sort_by(|a, b| a.0.cmp(&b.0));
            let items: Vec<String> = keys
                .iter()
                .map(|(k, v)| {
                    let k = if escape_keys {
                        format!("{Q}{k}{Q}")
                    } else {
                        k.clone()
                    };
                    format!("{k}:{}", gemma4_value(v, escape_keys))
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
        Json::Array(a) => format!(
            "[{}]",
            a.iter()
                .map(|x| gemma4_value(x, escape_keys))
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => py_str(other),
    }
}

fn parse_arguments(f: &FunctionCall) -> Result<Json> {
    Json::parse(&f.arguments).map_err(|e| Error::Invalid(format!("arguments of `{}`: {e}", f.name)))
}

fn items_of<'a>(args: &'a Json, f: &FunctionCall) -> Result<&'a [(String, Json)]> {
    args.as_object().ok_or_else(|| {
        Error::Invalid(format!(
            "the arguments of `{}` must be an object, got {}",
            f.name, f.arguments
        ))
    })
}

/// An assistant's function calls in the tool format's syntax.
pub fn format_calls(format: &str, calls: &[FunctionCall]) -> Result<String> {
    let object = |pairs: Vec<(&str, Json)>| {
        Json::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    };
    match format {
        "default" => Ok(calls
            .iter()
            .map(|f| format!("Action: {}\nAction Input: {}", f.name, f.arguments))
            .collect::<Vec<_>>()
            .join("\n")),
        "glm4" => {
            if calls.len() > 1 {
                return Err(Error::Invalid(
                    "GLM-4's tool format does not support parallel function calls".into(),
                ));
            }
            let f = calls
                .first()
                .ok_or_else(|| Error::Invalid("a function message with no call".into()))?;
            Ok(format!("{}\n{}", f.name, f.arguments))
        }
        "llama3" => {
            let objs = calls
                .iter()
                .map(|f| {
                    Ok(object(vec![
                        ("name", Json::Str(f.name.clone())),
                        ("parameters", parse_arguments(f)?),
                    ]))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(if objs.len() == 1 {
                objs[0].dumps()
            } else {
                Json::Array(objs).dumps()
            })
        }
        "mistral" => {
            let objs = calls
                .iter()
                .map(|f| {
                    Ok(object(vec![
                        ("name", Json::Str(f.name.clone())),
                        ("arguments", parse_arguments(f)?),
                    ]))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Json::Array(objs).dumps())
        }
        "qwen" | "ling" => Ok(calls
            .iter()
            .map(|f| {
                let obj = object(vec![
                    ("name", Json::Str(f.name.clone())),
                    ("arguments", parse_arguments(f)?),
                ]);
                Ok(format!("<tool_call>\n{}\n</tool_call>", obj.dumps()))
            })
            .collect::<Result<Vec<_>>>()?
            .join("\n")),
        "qwen3_5" => Ok(calls
            .iter()
            .map(|f| {
                let args = parse_arguments(f)?;
                let mut s = format!("<tool_call>\n<function={}>", f.name);
                for (k, v) in items_of(&args, f)? {
                    let v = match v {
                        Json::Str(s) => s.clone(),
                        other => other.dumps(),
                    };
                    s.push_str(&format!("\n<parameter={k}>\n{v}\n</parameter>"));
                }
                s.push_str("\n</function>\n</tool_call>");
                Ok(s)
            })
            .collect::<Result<Vec<_>>>()?
            .join("\n")),
        "gemma4" => Ok(calls
            .iter()
            .map(|f| {
                let args = match Json::parse(&f.arguments) {
                    Ok(Json::Object(o)) => {
                        let mut o = o;
                        o.sort_by(|a, b| a.0.cmp(&b.0));
                        o.iter()
                            .map(|(k, v)| format!("{k}:{}", gemma4_value(v, false)))
                            .collect::<Vec<_>>()
                            .join(",")
                    }
                    Ok(Json::Str(s)) => s,
                    Ok(other) => gemma4_value(&other, false),
                    Err(_) => f.arguments.clone(),
                };
                format!("<|tool_call>call:{}{{{args}}}<tool_call|>", f.name)
            })
            .collect::<String>()),
        // LFM2: a Python list of calls with keyword arguments (strings quoted as is).
        "lfm2" => {
            let texts = calls
                .iter()
                .map(|f| {
                    let args = parse_arguments(f)?;
                    let kwargs: Vec<String> = items_of(&args, f)?
                        .iter()
                        .map(|(k, v)| match v {
                            Json::Str(s) => format!("{k}=\"{s}\""),
                            other => format!("{k}={}", other.dumps()),
                        })
                        .collect();
                    Ok(format!("{}({})", f.name, kwargs.join(", ")))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(format!(
                "<|tool_call_start|>[{}]<|tool_call_end|>",
                texts.join(", ")
            ))
        }
        // minimax1: one JSON object per line inside <tool_calls>.
        "minimax1" => {
            let lines = calls
                .iter()
                .map(|f| {
                    Ok(object(vec![
                        ("name", Json::Str(f.name.clone())),
                        ("arguments", parse_arguments(f)?),
                    ])
                    .dumps())
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(format!("<tool_calls>\n{}\n</tool_calls>", lines.join("\n")))
        }
        "minimax2" => Ok(calls
            .iter()
            .map(|f| {
                let args = parse_arguments(f)?;
                let mut s = format!("<invoke name=\"{}\">", f.name);
                for (k, v) in items_of(&args, f)? {
                    s.push_str(&format!(
                        "\n<parameter name=\"{k}\">{}</parameter>",
                        value_text(v)
                    ));
                }
                s.push_str("\n</invoke>");
                Ok(s)
            })
            .collect::<Result<Vec<_>>>()?
            .join("\n")),
        "seed_oss" => Ok(calls
            .iter()
            .map(|f| {
                let args = parse_arguments(f)?;
                let mut s = format!("\n<seed:tool_call>\n<function={}", f.name);
                for (k, v) in items_of(&args, f)? {
                    s.push_str(&format!("\n<parameter={k}>{}</parameter>", value_text(v)));
                }
                s.push_str("\n</function>\n</seed:tool_call>");
                Ok(s)
            })
            .collect::<Result<Vec<_>>>()?
            .join("\n")),
        "glm4_moe" => Ok(calls
            .iter()
            .map(|f| {
                let args = parse_arguments(f)?;
                let mut s = format!("\n<tool_call>{}", f.name);
                for (k, v) in items_of(&args, f)? {
                    let v = match v {
                        Json::Str(s) => s.clone(),
                        other => other.dumps(),
                    };
                    s.push_str(&format!(
                        "\n<arg_key>{k}</arg_key>\n<arg_value>{v}</arg_value>"
                    ));
                }
                Ok(s)
            })
            .collect::<Result<Vec<_>>>()?
            .join("\n")),
        other => Err(unsupported(other)),
    }
}

/// An argument value as the XML-style formats print it: a string as is, anything else as JSON.
fn value_text(v: &Json) -> String {
    match v {
        Json::Str(s) => s.clone(),
        other => other.dumps(),
    }
}

/// The calls in a function message's JSON (`{"name", "arguments"}` or a list of them).
pub fn parse_calls(json_text: &str) -> Result<Vec<FunctionCall>> {
    let v = Json::parse(json_text).map_err(|e| {
        Error::Invalid(format!(
            "a function message is not valid JSON ({e}): {json_text:?}"
        ))
    })?;
    let list = match v {
        Json::Array(a) => a,
        other => vec![other],
    };
    list.iter()
        .map(|tc| {
            let name = tc.get("name").ok_or_else(|| {
                Error::Invalid(format!("a function call has no `name`: {}", tc.dumps()))
            })?;
            let args = tc.get("arguments").ok_or_else(|| {
                Error::Invalid(format!(
                    "a function call has no `arguments`: {}",
                    tc.dumps()
                ))
            })?;
            Ok(FunctionCall {
                name: py_str(name),
                arguments: args.dumps(),
            })
        })
        .collect()
}

/// Where `open…close` first occurs in `s` (`re.search(escape(open)(.*?)escape(close), DOTALL)`):
/// the whole match and the inner text.
pub fn find_between<'a>(s: &'a str, open: &str, close: &str) -> Option<(&'a str, &'a str)> {
    if open.is_empty() && close.is_empty() {
        return Some(("", ""));
    }
    // A later `open` has a `close` after it only if the first one does.
    let a = s.find(open)?;
    let inner_start = a + open.len();
    let b = s[inner_start..].find(close)?;
    let end = inner_start + b + close.len();
    Some((&s[a..end], &s[inner_start..inner_start + b]))
}

/// LLaMA-Factory's `FunctionFormatter`: an assistant's function-call message (JSON, optionally
/// with a thought or inside tool-call words) rendered in the tool format, ready for the slots.
pub fn function_content(
    format: &str,
    content: &str,
    thought_words: Option<(&str, &str)>,
    tool_call_words: Option<(&str, &str)>,
) -> Result<String> {
    let tool_call = tool_call_words.and_then(|(o, c)| find_between(content, o, c));
    match tool_call {
        None => {
            let thought = thought_words.and_then(|(o, c)| find_between(content, o, c));
            let json_part = match thought {
                Some((whole, _)) => content.replace(whole, ""),
                None => content.to_string(),
            };
            let text = format_calls(format, &parse_calls(&json_part)?)?;
            Ok(match thought {
                Some((whole, _)) => format!("{whole}{text}"),
                None => text,
            })
        }
        Some((whole, inner)) => {
            let thought_content = content.replace(whole, "");
            let text = format_calls(format, &parse_calls(inner)?)?;
            Ok(format!("{thought_content}{text}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn py_format_single_pass() {
        assert_eq!(
            py_format("a{x}b{{c}}{y}", &[("x", "{y}"), ("y", "Y")]).expect("format"),
            "a{y}b{c}Y"
        );
    }

    #[test]
    fn find_between_is_leftmost_shortest() {
        assert_eq!(
            find_between("x<a>1</a><a>2</a>", "<a>", "</a>"),
            Some(("<a>1</a>", "1"))
        );
        assert_eq!(find_between("<a>1", "<a>", "</a>"), None);
    }
}
