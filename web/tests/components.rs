//! Component tests in a real headless Chromium (wasm-bindgen-test): the page and the breakdown bar
//! render lorafit-core's numbers. Run by `cargo xtask test` with wasm-bindgen-test-runner.
#![cfg(target_arch = "wasm32")]

use std::time::Duration;

use lorafit_web::{App, Bar, BarProps, compute, default_settings, settings_from_query};
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn mount() -> web_sys::Element {
    let doc = web_sys::window()
        .and_then(|w| w.document())
        .expect("document");
    let root = doc.create_element("div").expect("div");
    doc.body()
        .expect("body")
        .append_child(&root)
        .expect("append");
    root
}

#[wasm_bindgen_test]
async fn the_page_shows_lorafit_core_peak_in_data_bytes() {
    let root = mount();
    yew::Renderer::<App>::with_root(root.clone()).render();
    yew::platform::time::sleep(Duration::from_millis(100)).await;
    let peak = root
        .query_selector("[data-testid=peak-per-gpu]")
        .expect("query")
        .expect("headline rendered");
    let want = compute(&default_settings())
        .expect("estimate")
        .peak_reserved_bytes;
    assert_eq!(peak.get_attribute("data-bytes"), Some(want.to_string()));
    // Every input carries its hover help.
    let labels = root.query_selector_all(".inputs label").expect("labels");
    assert!(labels.length() >= 15);
    for i in 0..labels.length() {
        let l = labels
            .item(i)
            .expect("label")
            .dyn_into::<web_sys::Element>()
            .expect("element");
        assert!(
            l.get_attribute("title").is_some_and(|t| t.len() > 10),
            "label {i} has no help"
        );
    }
    // The comparison table has the four methods; it and the chart are computed in the task after
    // the headline (slow in this unoptimised test build): wait for them.
    for _ in 0..60 {
        let done = root
            .query_selector_all("[data-testid=chart] svg path")
            .is_ok_and(|p| p.length() > 0)
            && root
                .query_selector_all("[data-testid=compare] tr")
                .is_ok_and(|r| r.length() > 1);
        if done {
            break;
        }
        yew::platform::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = root
        .query_selector_all("[data-testid=compare] tr")
        .expect("rows");
    assert_eq!(rows.length(), 5);
    // The peak chart (drawn in the task after the headline) has the 7 stacked parts per panel.
    let areas = root
        .query_selector_all("[data-testid=chart] svg path")
        .expect("paths");
    assert_eq!(areas.length(), 14);
    // The model search's datalist (written after the first render) offers every catalog id once.
    let options = root
        .query_selector_all("#model-list option")
        .expect("options");
    assert_eq!(
        options.length() as usize,
        lorafit_core::catalog::models().len()
    );
    let first = options
        .item(0)
        .expect("option")
        .dyn_into::<web_sys::Element>()
        .expect("element");
    assert_eq!(
        first.get_attribute("value").as_deref(),
        Some(lorafit_core::catalog::models()[0].id.as_str())
    );
}

#[wasm_bindgen_test]
async fn the_bar_has_one_rect_per_part_and_the_gpu_line() {
    let root = mount();
    let e = compute(&default_settings()).expect("estimate");
    yew::Renderer::<Bar>::with_root_and_props(root.clone(), BarProps { e }).render();
    yew::platform::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        root.query_selector_all("svg rect").expect("rects").length(),
        7
    );
    assert_eq!(
        root.query_selector_all("svg line").expect("line").length(),
        1
    );
}

#[wasm_bindgen_test]
fn hostile_query_strings_fall_back_to_defaults() {
    let (s, warnings) = settings_from_query(
        "?lora_rank=%3Cscript%3E&cutoff_len=-1&x=1&model_name_or_path=Qwen%2FQwen2.5-0.5B",
    );
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(compute(&s).is_ok());
}

#[wasm_bindgen_test]
fn a_link_without_a_key_means_llamafactorys_default_not_the_examples() {
    // The example has gradient_accumulation_steps 8 and a GPU; a link that leaves them out has
    // LLaMA-Factory's default (1) and no GPU, exactly as `lorafit estimate` of the same keys.
    let q = "?model_name_or_path=meta-llama%2FLlama-3.2-3B&finetuning_type=full&per_device_train_batch_size=1&cutoff_len=4096&disable_gradient_checkpointing=true&flash_attn=sdpa&bf16=true";
    let (s, warnings) = settings_from_query(q);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(s.get("gradient_accumulation_steps"), None);
    assert_eq!(s.get("gpu"), None);
    let (given, _) = lorafit_core::export::from_query(q);
    assert_eq!(
        compute(&s).expect("page").peak_reserved_bytes,
        compute(&given).expect("keys alone").peak_reserved_bytes
    );
    // An empty link (or one with only the language) is the example.
    assert_eq!(settings_from_query("?lang=zh").0, default_settings());
    // A stage is an input like any other key.
    let (dpo, _) = settings_from_query("?model_name_or_path=Qwen%2FQwen2.5-7B&stage=dpo");
    let (sft, _) = settings_from_query("?model_name_or_path=Qwen%2FQwen2.5-7B");
    assert!(
        compute(&dpo).expect("dpo").breakdown.logits > compute(&sft).expect("sft").breakdown.logits
    );
}
