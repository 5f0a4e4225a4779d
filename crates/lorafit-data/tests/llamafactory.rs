//! lorafit-data against LLaMA-Factory's own pipeline: every case of tests/fixtures/expected.json
//! (made by scripts/make_lf_data_fixtures.py with LLaMA-Factory's `get_dataset`) must give the same
//! input_ids and labels — templates, tool calls, thinking, masking, packing, pt text, pairwise and
//! KTO data, csv / txt / openai files, mixing.

use std::path::{Path, PathBuf};

use lorafit_data::load::{DataArgs, Encoded, Mix, Stage, dataset_names, load};
use lorafit_data::process::Masking;
use lorafit_data::{Example, Template};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn expected() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("expected.json")).expect("fixture"),
    )
    .expect("json")
}

fn ints<T: TryFrom<i64>>(v: &Value) -> Vec<T> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|x| T::try_from(x.as_i64().expect("int")).ok().expect("fits"))
        .collect()
}

fn args_of(keys: &Value) -> DataArgs {
    let b = |k: &str| keys.get(k).and_then(Value::as_bool);
    DataArgs {
        dataset: dataset_names(keys["dataset"].as_str().expect("dataset")),
        dataset_dir: fixtures().join("data"),
        tokenizer_dir: fixtures().join("tok"),
        template: keys
            .get("template")
            .and_then(Value::as_str)
            .map(str::to_string),
        stage: Stage::from_name(keys["stage"].as_str().expect("stage")).expect("stage"),
        cutoff_len: keys["cutoff_len"].as_u64().expect("cutoff") as usize,
        max_samples: keys
            .get("max_samples")
            .and_then(Value::as_u64)
            .map(|x| x as usize),
        packing: b("packing"),
        neat_packing: b("neat_packing").unwrap_or(false),
        masking: Masking {
            train_on_prompt: b("train_on_prompt").unwrap_or(false),
            mask_history: b("mask_history").unwrap_or(false),
        },
        mix_strategy: Mix::from_name(
            keys.get("mix_strategy")
                .and_then(Value::as_str)
                .unwrap_or("concat"),
        )
        .expect("mix"),
        interleave_probs: keys
            .get("interleave_probs")
            .and_then(Value::as_str)
            .map(|p| {
                p.split(',')
                    .map(|x| x.trim().parse::<f64>().expect("probability"))
                    .collect()
            }),
        seed: 42,
        enable_thinking: b("enable_thinking").unwrap_or(true),
        preserve_thinking: false,
        default_system: keys
            .get("default_system")
            .and_then(Value::as_str)
            .map(str::to_string),
        tool_format: keys
            .get("tool_format")
            .and_then(Value::as_str)
            .map(str::to_string),
        preprocessing_batch_size: keys
            .get("preprocessing_batch_size")
            .and_then(Value::as_u64)
            .map_or(1000, |x| x as usize),
    }
}

fn check(what: &str, side: &str, got: &[Example], want_ids: &Value, want_labels: Option<&Value>) {
    let want_ids = want_ids.as_array().expect("ids");
    assert_eq!(
        got.len(),
        want_ids.len(),
        "{what}: number of {side}examples"
    );
    for (i, e) in got.iter().enumerate() {
        assert_eq!(
            e.input_ids,
            ints::<u32>(&want_ids[i]),
            "{what}: {side}input_ids of example {}",
            i + 1
        );
        if let Some(l) = want_labels {
            assert_eq!(
                e.labels,
                ints::<i64>(&l[i]),
                "{what}: {side}labels of example {}",
                i + 1
            );
        }
    }
}

#[test]
fn every_case_matches_llamafactory() {
    let (checked, refused_by_lf) = run_cases(&fixtures().join("data"), None);
    eprintln!(
        "{checked} cases equal LLaMA-Factory's; {} refused by LLaMA-Factory itself",
        refused_by_lf.len()
    );
    for r in &refused_by_lf {
        eprintln!("  refused by LLaMA-Factory: {r}");
    }
    assert!(checked >= 250, "only {checked} cases checked");
}

/// The same cases from parquet copies of their datasets (scripts/make_parquet_fixtures.py,
/// written by `datasets` as the hub serves them; one with zstd): LLaMA-Factory reads json and
/// parquet into the same Arrow table, so its expected ids hold for both.
#[test]
fn parquet_datasets_give_what_llamafactory_gives() {
    let dir = fixtures().join("parquet");
    let info: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("dataset_info.json")).expect("parquet dataset_info"),
    )
    .expect("json");
    let names: Vec<String> = info.as_object().expect("object").keys().cloned().collect();
    let (checked, _) = run_cases(&dir, Some(&names));
    eprintln!("{checked} cases from parquet files equal LLaMA-Factory's");
    assert!(checked >= 100, "only {checked} parquet cases checked");
}

/// Run every case of expected.json whose datasets are all in `only` (None: every case) with the
/// datasets read from `dataset_dir`; returns (cases checked, cases LLaMA-Factory refused).
fn run_cases(dataset_dir: &Path, only: Option<&[String]>) -> (usize, Vec<String>) {
    let exp = expected();
    let today = exp["today"].as_str().expect("today").to_string();
    let mut checked = 0;
    let mut refused_by_lf = Vec::new();
    for case in exp["cases"].as_array().expect("cases") {
        let keys = &case["keys"];
        let what = keys.to_string();
        if let Some(e) = case.get("error") {
            refused_by_lf.push(format!("{what}: {e}"));
            continue;
        }
        let mut args = args_of(keys);
        if let Some(only) = only
            && !args.dataset.iter().all(|d| only.contains(d))
        {
            continue;
        }
        args.dataset_dir = dataset_dir.to_path_buf();
        // The llama3 tool prompt prints the date; the fixture's day is the one LLaMA-Factory printed.
        args.template = args.template.clone();
        let got = lorafit_data::load::load_with(&args, |t: &mut Template| t.today = today.clone())
            .unwrap_or_else(|e| panic!("{what}: {e}"))
            .0;
        let want = &case["expected"];
        match got {
            Encoded::Examples(ex) => {
                if args.stage == Stage::Pt {
                    check(&what, "", &ex, &want["input_ids"], None);
                    let pad = want["pad_token_id"].as_i64().expect("pad");
                    for e in &ex {
                        let labels: Vec<i64> = e
                            .input_ids
                            .iter()
                            .map(|&x| if x as i64 == pad { -100 } else { x as i64 })
                            .collect();
                        assert_eq!(
                            e.labels, labels,
                            "{what}: pt labels are the ids with pad ignored"
                        );
                    }
                } else {
                    check(&what, "", &ex, &want["input_ids"], Some(&want["labels"]));
                }
                if let Some(pos) = want.get("position_ids") {
                    for (i, e) in ex.iter().enumerate() {
                        assert_eq!(
                            e.position_ids,
                            ints::<u32>(&pos[i]),
                            "{what}: positions of pack {}",
                            i + 1
                        );
                    }
                }
                if let Some(mask) = want.get("attention_mask") {
                    for (i, e) in ex.iter().enumerate() {
                        assert_eq!(
                            e.segment_ids,
                            ints::<u32>(&mask[i]),
                            "{what}: neat mask of pack {}",
                            i + 1
                        );
                    }
                }
            }
            Encoded::Pairs(p) => {
                let chosen: Vec<Example> = p.iter().map(|x| x.chosen.clone()).collect();
                let rejected: Vec<Example> = p.iter().map(|x| x.rejected.clone()).collect();
                check(
                    &what,
                    "chosen ",
                    &chosen,
                    &want["chosen_input_ids"],
                    Some(&want["chosen_labels"]),
                );
                check(
                    &what,
                    "rejected ",
                    &rejected,
                    &want["rejected_input_ids"],
                    Some(&want["rejected_labels"]),
                );
            }
            Encoded::Feedback(f) => {
                let ex: Vec<Example> = f.iter().map(|x| x.example.clone()).collect();
                let kl: Vec<Example> = f.iter().map(|x| x.kl.clone()).collect();
                check(&what, "", &ex, &want["input_ids"], Some(&want["labels"]));
                check(
                    &what,
                    "kl ",
                    &kl,
                    &want["kl_input_ids"],
                    Some(&want["kl_labels"]),
                );
                let tags: Vec<bool> = f.iter().map(|x| x.desirable).collect();
                let want_tags: Vec<bool> = want["kto_tags"]
                    .as_array()
                    .expect("tags")
                    .iter()
                    .map(|b| b.as_bool().expect("bool"))
                    .collect();
                assert_eq!(tags, want_tags, "{what}: kto tags");
            }
        }
        checked += 1;
    }
    (checked, refused_by_lf)
}

#[test]
fn rows_llamafactory_skips_are_reported() {
    let args = args_of(
        &serde_json::json!({"stage": "sft", "template": "qwen3", "dataset": "sharegpt_demo", "cutoff_len": 1024}),
    );
    let (enc, report) = load(&args).expect("load");
    assert_eq!(enc.len(), 3);
    assert_eq!(report.dropped.len(), 1);
    let d = &report.dropped[0];
    assert_eq!((d.dataset.as_str(), d.row), ("sharegpt_demo", 4));
    assert!(
        d.reason.contains("`human`") && d.reason.contains("`gpt`"),
        "{}",
        d.reason
    );
}

#[test]
fn bad_data_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("lorafit-data-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("dataset_info.json"),
        r#"{"a": {"file_name": "a.json"}, "hub": {"hf_hub_url": "x/y"}, "p": {"file_name": "p.parquet"}, "num": {"file_name": "num.json"}}"#,
    )
    .expect("write");
    std::fs::write(
        dir.join("a.json"),
        r#"[{"instruction": "x", "output": "y"}, 7]"#,
    )
    .expect("write");
    std::fs::write(dir.join("p.parquet"), b"PAR1").expect("write");
    std::fs::write(
        dir.join("num.json"),
        r#"[{"instruction": 5, "output": "y"}]"#,
    )
    .expect("write");
    let mut args = args_of(
        &serde_json::json!({"stage": "sft", "template": "qwen3", "dataset": "a", "cutoff_len": 64}),
    );
    args.dataset_dir = dir.clone();
    for (ds, want) in [
        ("a", "row 2: is 7, not an object"),
        ("hub", "lorafit reads local files only"),
        ("p", "p.parquet: cannot be read as parquet"),
        ("num", "`instruction` must be a string, got 5"),
        ("missing", "is not in"),
    ] {
        args.dataset = vec![ds.to_string()];
        let e = load(&args).expect_err(ds).to_string();
        assert!(e.contains(want), "{ds}: {e}");
    }
    args.dataset = vec!["a".into()];
    args.template = Some("qwen9".into());
    let e = load(&args).expect_err("template").to_string();
    assert!(
        e.contains("not a LLaMA-Factory template") && e.contains("qwen3"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `val_size` splits as LLaMA-Factory's `train_test_split(seed)`: numpy's `default_rng`
/// permutation (SeedSequence + PCG64) and `datasets`' head/tail rule, on fixtures made with numpy
/// and datasets (`scripts/make_numpy_fixtures.py`).
#[test]
fn val_size_splits_as_datasets_does() {
    let want: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("numpy_split.json")).expect("fixture"),
    )
    .expect("json");
    for p in want["permutations"].as_array().expect("perms") {
        let (seed, n) = (
            p["seed"].as_u64().expect("seed"),
            p["n"].as_u64().expect("n"),
        );
        assert_eq!(
            lorafit_data::NumpyRng::new(seed).permutation(n as usize),
            ints::<usize>(&p["permutation"]),
            "default_rng({seed}).permutation({n})"
        );
    }
    for s in want["splits"].as_array().expect("splits") {
        let n = s["n"].as_u64().expect("n") as usize;
        let (train, eval) = lorafit_data::load::split_val(
            (0..n).collect::<Vec<usize>>(),
            s["val_size"].as_f64().expect("val_size"),
            s["seed"].as_u64().expect("seed"),
        )
        .expect("splits");
        assert_eq!(eval, ints::<usize>(&s["test"]), "{s:?}");
        assert_eq!(train, ints::<usize>(&s["train"]));
    }
    for bad in [0.0, 1.0, 24.0, 30.0] {
        let e = lorafit_data::load::split_val((0..24).collect::<Vec<_>>(), bad, 42)
            .expect_err("nothing left to train or to evaluate");
        assert!(e.to_string().contains("val_size"), "{e}");
    }
}

// ---------------------------------------------------------------- media headers

fn media_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/media")
}

#[test]
fn media_headers_say_what_pyav_and_pillow_say() {
    use lorafit_data::media::{image_size, probe_video};
    let dir = media_dir();
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).expect("fixture"))
            .expect("fixture");
    for (name, want) in expected["images"].as_object().expect("fixture") {
        let got = image_size(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            [got.0, got.1],
            [
                want[0].as_u64().expect("fixture"),
                want[1].as_u64().expect("fixture")
            ],
            "{name}"
        );
    }
    for (name, want) in expected["videos"].as_object().expect("fixture") {
        let got = probe_video(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            (got.width, got.height),
            (
                want["width"].as_u64().expect("fixture"),
                want["height"].as_u64().expect("fixture")
            ),
            "{name}"
        );
        assert_eq!(
            got.frames,
            want["frames"].as_u64().expect("fixture"),
            "{name}"
        );
        assert!(
            (got.seconds - want["seconds"].as_f64().expect("fixture")).abs() < 1e-9,
            "{name}: {}",
            got.seconds
        );
        assert!(
            (got.average_fps - want["average_fps"].as_f64().expect("fixture")).abs() < 1e-6,
            "{name}: {}",
            got.average_fps
        );
    }
    // Not media, or cut short: an error naming what is wrong, never a panic.
    let scratch = std::env::temp_dir().join(format!("lorafit-media-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("fixture");
    let text = scratch.join("notes.mp4");
    std::fs::write(&text, "just text").expect("fixture");
    assert!(probe_video(&text).expect_err("text").contains("not an MP4"));
    let bytes = std::fs::read(dir.join("faststart.mp4")).expect("fixture");
    for cut in [9, 40, 200] {
        let p = scratch.join(format!("cut{cut}.mp4"));
        std::fs::write(&p, &bytes[..cut]).expect("fixture");
        assert!(probe_video(&p).is_err(), "cut at {cut}");
    }
    // Only the header is read: a faststart file cut inside its media data still says it.
    let p = scratch.join("half.mp4");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).expect("fixture");
    assert_eq!(probe_video(&p).expect("fixture").frames, 24);
    let jpg = std::fs::read(dir.join("a.jpg")).expect("fixture");
    let p = scratch.join("cut.jpg");
    std::fs::write(&p, &jpg[..20]).expect("fixture");
    assert!(image_size(&p).is_err());
    std::fs::remove_dir_all(&scratch).ok();
}

/// Every file `scripts/make_audio_fixtures.py` wrote: the samples per channel and rate FFmpeg's
/// decoders give (what torchaudio hands LLaMA-Factory), read from the headers alone.
#[test]
fn audio_headers_say_what_ffmpeg_decodes() {
    use lorafit_data::media::probe_audio;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audio");
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../lorafit-core/tests/fixtures/audio_tokens.json"),
        )
        .expect("fixture"),
    )
    .expect("fixture");
    let files = expected["files"].as_array().expect("fixture");
    assert_eq!(files.len(), 12);
    for want in files {
        let name = want["file"].as_str().expect("fixture");
        let got = probe_audio(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            (got.samples, got.rate, got.channels),
            (
                want["samples"].as_u64().expect("fixture"),
                want["rate"].as_u64().expect("fixture"),
                want["channels"].as_u64().expect("fixture")
            ),
            "{name}"
        );
    }
    // Cut short or not audio: an error, never a panic.
    let scratch = std::env::temp_dir().join(format!("lorafit-audio-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("fixture");
    for name in ["mono16k.wav", "mono16k.flac", "cbr44k.mp3", "speech.opus"] {
        let bytes = std::fs::read(dir.join(name)).expect("fixture");
        for cut in [3, 11, 30] {
            let p = scratch.join(format!("cut{cut}-{name}"));
            std::fs::write(&p, &bytes[..cut]).expect("fixture");
            assert!(probe_audio(&p).is_err(), "{name} cut at {cut}");
        }
    }
    let p = scratch.join("notes.wav");
    std::fs::write(&p, "just text").expect("fixture");
    assert!(probe_audio(&p).expect_err("text").contains("not a WAV"));
    std::fs::remove_dir_all(&scratch).ok();
}

#[test]
fn a_multimodal_dataset_is_scanned_row_by_row_from_media_dir() {
    use lorafit_data::info::{DatasetAttr, read_info};
    use lorafit_data::media::{Video, scan};
    let scratch = std::env::temp_dir().join(format!("lorafit-scan-{}", std::process::id()));
    let media = scratch.join("media");
    std::fs::create_dir_all(&media).expect("fixture");
    for f in ["a.png", "a.jpg", "clip.avi", "moov_at_end.mp4"] {
        std::fs::copy(media_dir().join(f), media.join(f)).expect("fixture");
    }
    let audio = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audio/cbr48k.mp3");
    std::fs::copy(audio, media.join("a.mp3")).expect("fixture");
    std::fs::write(
        scratch.join("dataset_info.json"),
        r#"{"mm": {"file_name": "mm.json", "formatting": "sharegpt", "columns": {"messages": "messages", "images": "images", "videos": "videos", "audios": "audios"}}}"#,
    )
    .expect("fixture");
    std::fs::write(
        scratch.join("mm.json"),
        r#"[
 {"messages": [{"from": "human", "value": "<image><video>"}, {"from": "gpt", "value": "ok"}], "images": ["media/a.png"], "videos": ["media/clip.avi"]},
 {"messages": [{"from": "human", "value": "<video>"}, {"from": "gpt", "value": "ok"}], "videos": [["media/a.jpg", "media/a.png", "media/a.jpg"]]},
 {"messages": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "ok"}], "images": "media/missing.png"},
 {"messages": [{"from": "human", "value": "<video><audio><audio>"}, {"from": "gpt", "value": "ok"}], "videos": ["media/moov_at_end.mp4"], "audios": ["media/a.mp3", "media/a.mp3"]}
]"#,
    )
    .expect("fixture");
    let (info_path, info) = read_info(&scratch, "mm").expect("fixture");
    let attr = DatasetAttr::from_info(&info_path, &info, "mm").expect("fixture");
    let s = scan(&attr, &scratch, 1000).expect("fixture");
    assert_eq!(s.rows.len(), 4);
    assert_eq!(s.rows[0].images, vec![(53, 37)]);
    assert!(matches!(s.rows[0].videos[..], [Video::File(h)] if h.frames == 30 && h.width == 40));
    assert_eq!(
        s.rows[1].videos,
        vec![Video::Frames {
            count: 3,
            width: 53,
            height: 37
        }]
    );
    assert!(s.rows[2].images.is_empty());
    assert_eq!(s.unreadable.len(), 1);
    assert!(
        s.unreadable[0].0.ends_with("missing.png"),
        "{:?}",
        s.unreadable
    );
    assert!(matches!(s.rows[3].videos[..], [Video::File(h)] if h.frames == 20));
    assert_eq!(s.rows[3].audios.len(), 2);
    assert_eq!(
        (s.rows[3].audios[0].samples, s.rows[3].audios[0].rate),
        (38400, 48000)
    );
    assert!(s.rows[..3].iter().all(|r| r.audios.is_empty()));
    std::fs::remove_dir_all(&scratch).ok();
}
