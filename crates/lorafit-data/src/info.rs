//! `dataset_info.json` entries as LLaMA-Factory's `DatasetAttr` reads them, and the rows of their
//! local files (json / jsonl / txt / csv, a file or a directory of files of one type).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::json::Json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Formatting {
    Alpaca,
    Sharegpt,
    Openai,
}

/// One dataset of `dataset_info.json`, with LLaMA-Factory's defaults: when an entry has `columns`
/// (or `tags`), every column (tag) it does not name is unset, as `DatasetAttr.join` does.
#[derive(Debug, Clone)]
pub struct DatasetAttr {
    pub name: String,
    /// The local file or directory (`file_name`, relative to dataset_dir).
    pub path: PathBuf,
    pub formatting: Formatting,
    pub ranking: bool,
    pub num_samples: Option<usize>,
    pub columns: Columns,
    pub tags: Tags,
}

#[derive(Debug, Clone, Default)]
pub struct Columns {
    pub prompt: Option<String>,
    pub query: Option<String>,
    pub response: Option<String>,
    pub history: Option<String>,
    pub messages: Option<String>,
    pub system: Option<String>,
    pub tools: Option<String>,
    pub images: Option<String>,
    pub videos: Option<String>,
    pub audios: Option<String>,
    pub chosen: Option<String>,
    pub rejected: Option<String>,
    pub kto_tag: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Tags {
    pub role_tag: Option<String>,
    pub content_tag: Option<String>,
    pub user_tag: Option<String>,
    pub assistant_tag: Option<String>,
    pub observation_tag: Option<String>,
    pub function_tag: Option<String>,
    pub system_tag: Option<String>,
}

fn s(x: &str) -> Option<String> {
    Some(x.to_string())
}

/// `dataset_dir/dataset_info.json`, parsed.
pub fn read_info(dataset_dir: &Path, for_name: &str) -> Result<(PathBuf, Json)> {
    let info_path = dataset_dir.join("dataset_info.json");
    let text = std::fs::read_to_string(&info_path).map_err(|e| {
        Error::Invalid(format!(
            "`dataset: {for_name}` is not a file, so it must be a name in {}, which cannot be read: {e}",
            info_path.display()
        ))
    })?;
    let info =
        Json::parse(&text).map_err(|e| Error::file(&info_path, format!("not valid JSON: {e}")))?;
    if info.as_object().is_none() {
        return Err(Error::file(&info_path, "must be a JSON object of datasets"));
    }
    Ok((info_path, info))
}

impl DatasetAttr {
    /// The entry `name` of the parsed dataset_info.json at `info_path`.
    pub fn from_info(info_path: &Path, info: &Json, name: &str) -> Result<DatasetAttr> {
        let dir = info_path.parent().unwrap_or(Path::new("."));
        let entry = info.get(name).ok_or_else(|| {
            let known: Vec<&str> = info
                .as_object()
                .map(|o| o.iter().map(|(k, _)| k.as_str()).collect())
                .unwrap_or_default();
            Error::Invalid(format!(
                "`dataset: {name}` is not in {} (it has: {})",
                info_path.display(),
                known.join(", ")
            ))
        })?;
        let bad = |m: String| Error::file(info_path, format!("dataset `{name}`: {m}"));
        for hub in [
            "hf_hub_url",
            "ms_hub_url",
            "om_hub_url",
            "script_url",
            "cloud_file_name",
        ] {
            if entry.get(hub).is_some() && entry.get("file_name").is_none() {
                return Err(bad(format!(
                    "is read from `{hub}: {}`; lorafit reads local files only — download it and give `file_name`",
                    entry.get(hub).map(Json::dumps).unwrap_or_default()
                )));
            }
        }
        let file = entry
            .get("file_name")
            .and_then(Json::as_str)
            .ok_or_else(|| bad("has no `file_name`".into()))?;
        let text = |key: &str| -> Result<Option<String>> {
            match entry.get(key) {
                None | Some(Json::Null) => Ok(None),
                Some(Json::Str(v)) => Ok(Some(v.clone())),
                Some(other) => Err(bad(format!(
                    "`{key}` must be a string, got {}",
                    other.dumps()
                ))),
            }
        };
        let formatting = match text("formatting")?.as_deref().unwrap_or("alpaca") {
            "alpaca" => Formatting::Alpaca,
            "sharegpt" => Formatting::Sharegpt,
            "openai" => Formatting::Openai,
            other => {
                return Err(bad(format!(
                    "`formatting: {other}` is not one of alpaca, sharegpt, openai"
                )));
            }
        };
        let ranking = match entry.get("ranking") {
            None | Some(Json::Null) => false,
            Some(Json::Bool(b)) => *b,
            Some(other) => {
                return Err(bad(format!(
                    "`ranking` must be true or false, got {}",
                    other.dumps()
                )));
            }
        };
        let num_samples = match entry.get("num_samples") {
            None | Some(Json::Null) => None,
            Some(Json::Int(n)) if *n > 0 => Some(*n as usize),
            Some(other) => {
                return Err(bad(format!(
                    "`num_samples` must be a positive integer, got {}",
                    other.dumps()
                )));
            }
        };
        let group = |key: &str, names: &[&str]| -> Result<Option<Vec<Option<String>>>> {
            let Some(g) = entry.get(key) else {
                return Ok(None);
            };
            let obj = g
                .as_object()
                .ok_or_else(|| bad(format!("`{key}` must be an object")))?;
            // LLaMA-Factory reads only the names it knows and ignores the rest.
            let _ = obj;
            names
                .iter()
                .map(|n| match g.get(n) {
                    None | Some(Json::Null) => Ok(None),
                    Some(Json::Str(v)) => Ok(Some(v.clone())),
                    Some(other) => Err(bad(format!(
                        "`{key}.{n}` must be a string, got {}",
                        other.dumps()
                    ))),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some)
        };
        const COLS: [&str; 13] = [
            "prompt", "query", "response", "history", "messages", "system", "tools", "images",
            "videos", "audios", "chosen", "rejected", "kto_tag",
        ];
        const TAGS: [&str; 7] = [
            "role_tag",
            "content_tag",
            "user_tag",
            "assistant_tag",
            "observation_tag",
            "function_tag",
            "system_tag",
        ];
        let columns = match group("columns", &COLS)? {
            Some(v) => {
                let mut it = v.into_iter();
                let mut n = || it.next().flatten();
                Columns {
                    prompt: n(),
                    query: n(),
                    response: n(),
                    history: n(),
                    messages: n(),
                    system: n(),
                    tools: n(),
                    images: n(),
                    videos: n(),
                    audios: n(),
                    chosen: n(),
                    rejected: n(),
                    kto_tag: n(),
                }
            }
            None => Columns {
                prompt: s("instruction"),
                query: s("input"),
                response: s("output"),
                messages: s("conversations"),
                ..Default::default()
            },
        };
        let tags = match group("tags", &TAGS)? {
            Some(v) => {
                let mut it = v.into_iter();
                let mut n = || it.next().flatten();
                Tags {
                    role_tag: n(),
                    content_tag: n(),
                    user_tag: n(),
                    assistant_tag: n(),
                    observation_tag: n(),
                    function_tag: n(),
                    system_tag: n(),
                }
            }
            None => Tags {
                role_tag: s("from"),
                content_tag: s("value"),
                user_tag: s("human"),
                assistant_tag: s("gpt"),
                observation_tag: s("observation"),
                function_tag: s("function_call"),
                system_tag: s("system"),
            },
        };
        Ok(DatasetAttr {
            name: name.to_string(),
            path: dir.join(file),
            formatting,
            ranking,
            num_samples,
            columns,
            tags,
        })
    }

    /// The rows of the dataset's file(s).
    pub fn rows(&self) -> Result<Vec<Json>> {
        let files: Vec<PathBuf> = if self.path.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(&self.path)
                .map_err(|e| Error::io(&self.path, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            v.sort();
            v
        } else if self.path.is_file() {
            vec![self.path.clone()]
        } else {
            return Err(Error::Invalid(format!(
                "dataset `{}`: {} does not exist",
                self.name,
                self.path.display()
            )));
        };
        let kind = |p: &Path| {
            p.extension()
                .and_then(|e| e.to_str())
                .unwrap_or("")
                .to_string()
        };
        let first = files.first().map(|p| kind(p)).unwrap_or_default();
        if let Some(other) = files.iter().find(|p| kind(p) != first) {
            return Err(Error::Invalid(format!(
                "dataset `{}`: {} holds files of different types ({} and {}); LLaMA-Factory needs one type",
                self.name,
                self.path.display(),
                first,
                kind(other)
            )));
        }
        let mut rows = Vec::new();
        for f in &files {
            rows.extend(read_rows(f)?);
        }
        if rows.is_empty() {
            return Err(Error::file(&self.path, "has no rows"));
        }
        Ok(rows)
    }
}

/// The rows of one file, by its extension as LLaMA-Factory's `FILEEXT2TYPE`: json / jsonl (a JSON
/// list or JSON lines), txt (one row `{"text": line}` per line), csv (a header row), parquet
/// (what `datasets` writes and the hub serves: nested lists and structs become JSON).
pub fn read_rows(path: &Path) -> Result<Vec<Json>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "json" | "jsonl" => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            if text.trim_start().starts_with('[') {
                match Json::parse(&text) {
                    Ok(Json::Array(a)) => Ok(a),
                    Ok(_) => Err(Error::file(
                        path,
                        "must be a JSON list of rows or JSON lines",
                    )),
                    Err(e) => Err(Error::file(path, format!("not valid JSON: {e}"))),
                }
            } else {
                text.lines()
                    .enumerate()
                    .filter(|(_, l)| !l.trim().is_empty())
                    .map(|(i, l)| {
                        Json::parse(l).map_err(|e| {
                            Error::data(
                                path,
                                format!("line {}", i + 1),
                                format!("not valid JSON: {e}"),
                            )
                        })
                    })
                    .collect()
            }
        }
        "txt" => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            // datasets' text builder: one row per line, line breaks dropped, empty lines kept.
            if text.is_empty() {
                return Ok(Vec::new());
            }
            let body = text.strip_suffix('\n').unwrap_or(&text);
            Ok(body
                .split('\n')
                .map(|l| {
                    Json::Object(vec![(
                        "text".into(),
                        Json::Str(l.strip_suffix('\r').unwrap_or(l).to_string()),
                    )])
                })
                .collect())
        }
        "csv" => {
            let mut rdr = csv::Reader::from_path(path)
                .map_err(|e| Error::file(path, format!("cannot be read as CSV: {e}")))?;
            let headers: Vec<String> = rdr
                .headers()
                .map_err(|e| Error::file(path, format!("has no CSV header row: {e}")))?
                .iter()
                .map(str::to_string)
                .collect();
            let mut rows = Vec::new();
            for (i, rec) in rdr.records().enumerate() {
                let rec =
                    rec.map_err(|e| Error::data(path, format!("row {}", i + 1), e.to_string()))?;
                rows.push(Json::Object(
                    headers
                        .iter()
                        .zip(rec.iter())
                        .map(|(h, v)| {
                            // pandas reads an empty field as a missing value.
                            let v = if v.is_empty() {
                                Json::Null
                            } else {
                                Json::Str(v.to_string())
                            };
                            (h.clone(), v)
                        })
                        .collect(),
                ));
            }
            Ok(rows)
        }
        "parquet" => read_parquet(path),
        "arrow" => Err(Error::file(
            path,
            "arrow files (datasets' save_to_disk) are not read by lorafit yet; convert it to jsonl or parquet (e.g. `python -c \"import datasets; datasets.load_from_disk('DIR').to_parquet('FILE.parquet')\"`)",
        )),
        other => Err(Error::file(
            path,
            format!(
                "`.{other}` is not a type LLaMA-Factory loads (arrow, csv, json, jsonl, parquet, txt)"
            ),
        )),
    }
}

/// A parquet file's rows as JSON objects (columns in file order; lists → arrays, structs and
/// maps → objects; a binary column must hold UTF-8, else the error names the row and column).
fn read_parquet(path: &Path) -> Result<Vec<Json>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let bad = |e: parquet::errors::ParquetError| {
        Error::file(path, format!("cannot be read as parquet: {e}"))
    };
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = SerializedFileReader::new(file).map_err(bad)?;
    let mut rows = Vec::new();
    for (i, row) in reader.get_row_iter(None).map_err(bad)?.enumerate() {
        let row = row.map_err(|e| Error::data(path, format!("row {}", i + 1), e.to_string()))?;
        let mut obj = Vec::new();
        for (name, field) in row.get_column_iter() {
            let v = parquet_field(field)
                .map_err(|m| Error::data(path, format!("row {}, column `{name}`", i + 1), m))?;
            obj.push((name.clone(), v));
        }
        rows.push(Json::Object(obj));
    }
    Ok(rows)
}

fn parquet_field(f: &parquet::record::Field) -> std::result::Result<Json, String> {
    use parquet::record::Field;
    Ok(match f {
        Field::Null => Json::Null,
        Field::Bool(b) => Json::Bool(*b),
        Field::Byte(v) => Json::Int(i64::from(*v)),
        Field::Short(v) => Json::Int(i64::from(*v)),
        Field::Int(v) => Json::Int(i64::from(*v)),
        Field::Long(v) => Json::Int(*v),
        Field::UByte(v) => Json::Int(i64::from(*v)),
        Field::UShort(v) => Json::Int(i64::from(*v)),
        Field::UInt(v) => Json::Int(i64::from(*v)),
        Field::ULong(v) => Json::UInt(*v),
        Field::Float16(v) => Json::Float(f64::from(f32::from(*v))),
        Field::Float(v) => Json::Float(f64::from(*v)),
        Field::Double(v) => Json::Float(*v),
        Field::Str(s) => Json::Str(s.clone()),
        Field::Bytes(b) => match std::str::from_utf8(b.data()) {
            Ok(s) => Json::Str(s.to_string()),
            Err(_) => {
                return Err(
                    "binary data (images stored inline are not read; use image paths)".into(),
                );
            }
        },
        Field::Group(row) => Json::Object(
            row.get_column_iter()
                .map(|(k, v)| Ok((k.clone(), parquet_field(v)?)))
                .collect::<std::result::Result<_, String>>()?,
        ),
        Field::ListInternal(list) => Json::Array(
            list.elements()
                .iter()
                .map(parquet_field)
                .collect::<std::result::Result<_, String>>()?,
        ),
        Field::MapInternal(map) => Json::Object(
            map.entries()
                .iter()
                .map(|(k, v)| {
                    let key = match parquet_field(k)? {
                        Json::Str(s) => s,
                        other => other.dumps(),
                    };
                    Ok((key, parquet_field(v)?))
                })
                .collect::<std::result::Result<_, String>>()?,
        ),
        other => Json::Str(other.to_string()),
    })
}
