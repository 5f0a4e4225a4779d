//! The first data fixtures, made with LLaMA-Factory 0.9.5 (scripts/make_data_fixtures.py): six
//! templates × alpaca / sharegpt × cutoff_len, packing, neat_packing, train_on_prompt and
//! mask_history still give LLaMA-Factory 0.9.5's ids; and clear errors for bad rows.

use std::path::{Path, PathBuf};

use lorafit_data::example::{greedy_knapsack, load_pretokenized};
use lorafit_data::load::{DataArgs, Mix, Stage, load};
use lorafit_data::process::Masking;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lf095")
}

fn ints<T: TryFrom<i64>>(v: &Value) -> Vec<T> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|x| T::try_from(x.as_i64().expect("int")).ok().expect("fits"))
        .collect()
}

fn args(dir: &Path, template: &str, dataset: &str, cutoff: usize) -> DataArgs {
    DataArgs {
        dataset: vec![dataset.to_string()],
        dataset_dir: dir.to_path_buf(),
        tokenizer_dir: fixtures().join("tok"),
        template: Some(template.to_string()),
        stage: Stage::Sft,
        cutoff_len: cutoff,
        max_samples: None,
        packing: None,
        neat_packing: false,
        masking: Masking::default(),
        mix_strategy: Mix::Concat,
        interleave_probs: None,
        seed: 42,
        enable_thinking: true,
        preserve_thinking: false,
        default_system: None,
        tool_format: None,
        preprocessing_batch_size: 1000,
    }
}

#[test]
fn templates_and_truncation_match_llamafactory_095() {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("data_expected.json")).expect("fixture"),
    )
    .expect("json");
    let mut checked = 0;
    for case in expected["cases"].as_array().expect("cases") {
        let name = case["template"].as_str().expect("template");
        let ds = case["dataset"].as_str().expect("dataset");
        let cutoff = case["cutoff_len"].as_u64().expect("cutoff") as usize;
        let neat = case["neat_packing"].as_bool().unwrap_or(false);
        let packing = case["packing"].as_bool().unwrap_or(false) || neat;
        let mut a = args(&fixtures().join("text"), name, ds, cutoff);
        a.packing = Some(packing && !neat).filter(|p| *p);
        a.neat_packing = neat;
        a.masking = Masking {
            train_on_prompt: case["train_on_prompt"].as_bool().unwrap_or(false),
            mask_history: case["mask_history"].as_bool().unwrap_or(false),
        };
        let what = format!(
            "{name}/{ds}/{cutoff} packing={packing} neat={neat} {:?}",
            a.masking
        );
        let got = load(&a)
            .unwrap_or_else(|e| panic!("{what}: {e}"))
            .0
            .into_examples()
            .expect("examples");
        let want_ids = case["input_ids"].as_array().expect("ids");
        assert_eq!(got.len(), want_ids.len(), "{what}: number of examples");
        for (i, e) in got.iter().enumerate() {
            assert_eq!(
                e.input_ids,
                ints::<u32>(&want_ids[i]),
                "{what}: input_ids of row {}",
                i + 1
            );
            assert_eq!(
                e.labels,
                ints::<i64>(&case["labels"][i]),
                "{what}: labels of row {}",
                i + 1
            );
            if packing {
                assert_eq!(
                    e.position_ids,
                    ints::<u32>(&case["position_ids"][i]),
                    "{what}: positions {}",
                    i + 1
                );
            }
            if neat {
                assert_eq!(
                    e.segment_ids,
                    ints::<u32>(&case["attention_mask"][i]),
                    "{what}: segments {}",
                    i + 1
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 43, "only {checked} cases");
}

#[test]
fn knapsack_follows_llamafactory() {
    // LLaMA-Factory 0.9.5 printed [[8, 2], [7, 3], [5]] for greedy_knapsack([5, 3, 8, 2, 7], 10).
    assert_eq!(
        greedy_knapsack(vec![5, 3, 8, 2, 7], 10),
        vec![vec![8, 2], vec![7, 3], vec![5]]
    );
    // Its version loops forever on a length over capacity (its callers drop those first); ours stops.
    assert_eq!(greedy_knapsack(vec![11, 4], 10), vec![vec![4]]);
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("dir");
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn bad_rows_are_clear_errors() {
    let dir = std::env::temp_dir().join(format!("lorafit-data-rows-{}", std::process::id()));
    let check = |rows: &str, want: &str| {
        write(
            &dir,
            "dataset_info.json",
            r#"{"d": {"file_name": "d.jsonl"}, "s": {"file_name": "s.jsonl", "formatting": "sharegpt"}}"#,
        );
        write(&dir, "d.jsonl", rows);
        write(&dir, "s.jsonl", rows);
        let name = if rows.contains("conversations") {
            "s"
        } else {
            "d"
        };
        let e = load(&args(&dir, "qwen", name, 64))
            .expect_err(rows)
            .to_string();
        assert!(e.contains(want), "{rows:?}: {e}");
    };
    check("", "has no rows");
    check("{}\n", "row 1");
    check(
        "{\"instruction\": \"hi\"}\n",
        "1 prompt messages and 0 responses",
    );
    check(
        "{\"instruction\": 3, \"output\": \"x\"}\n",
        "`instruction` must be a string",
    );
    check(
        "{\"instruction\": \"a\", \"output\": \"b\"}\n{not json}\n",
        "line 2: not valid JSON",
    );
    check(
        "{\"conversations\": [{\"from\": \"gpt\", \"value\": \"x\"}]}\n",
        "the role `gpt` where `human` or `observation` was expected",
    );
    check(
        "{\"conversations\": [{\"from\": \"human\", \"value\": \"x\"}]}\n",
        "user/assistant pairs",
    );
    let e = load(&args(&dir, "qwen", "missing", 64))
        .expect_err("missing")
        .to_string();
    assert!(e.contains("is not in") && e.contains("d, s"), "{e}");

    let p = write(
        &dir,
        "pre.jsonl",
        "{\"input_ids\": [1, 2], \"labels\": [1]}\n",
    );
    let err = |p: &Path| load_pretokenized(p).expect_err("bad").to_string();
    assert!(err(&p).contains("`labels` has 1 entries but `input_ids` has 2"));
    let p = write(&dir, "pre.jsonl", "{\"input_ids\": []}\n");
    assert!(err(&p).contains("`input_ids` is empty"));
    let p = write(&dir, "pre.jsonl", "{\"input_ids\": [1, -3]}\n");
    assert!(err(&p).contains("not a non-negative"));
    let p = write(&dir, "pre.jsonl", "\n\n");
    assert!(err(&p).contains("has no examples"));
    let _ = std::fs::remove_dir_all(&dir);
}
