//! The lorafit calculator page: every input is a LLaMA-Factory key held in a
//! [`lorafit_core::Settings`], every number comes from lorafit-core, and the URL's query string is
//! the share link (Contract 4).

use lorafit_core::plan::Val;
use lorafit_core::{catalog, export};
use yew::prelude::*;

mod components;
mod format;
mod i18n;
mod keys;
mod state;

pub use components::{Bar, BarProps, Chart, ChartProps, ModelList};
use components::{COLORS, parts};
use format::*;
use i18n::{Lang, t};
use keys::*;
use state::*;
pub use state::{
    Secondary, bench_recompute, compute, compute_with, default_settings, settings_from_query,
};

#[function_component(App)]
pub fn app() -> Html {
    let initial = use_memo((), |_| {
        let q = web_sys::window()
            .and_then(|w| w.location().search().ok())
            .unwrap_or_default();
        settings_from_query(&q)
    });
    let settings = use_state(|| initial.0.clone());
    let warnings = use_state(|| initial.1.clone());
    let lang = use_state(|| {
        let q = web_sys::window()
            .and_then(|w| w.location().search().ok())
            .unwrap_or_default();
        split_lang(&q).1.unwrap_or_else(|| {
            let nav = web_sys::window()
                .and_then(|w| w.navigator().language())
                .unwrap_or_default();
            if nav.starts_with("zh") {
                Lang::Zh
            } else {
                Lang::En
            }
        })
    });
    let l = *lang;

    let set = {
        let settings = settings.clone();
        Callback::from(move |(k, v): (String, String)| {
            let mut s = (*settings).clone();
            if k == "sharding" {
                apply_sharding(&mut s, &v);
            } else if v.trim().is_empty() {
                s.unset(&k);
            } else if k == "optimizer" {
                apply_optimizer(&mut s, &v);
            } else if k == "method" {
                apply_method(&mut s, &v);
            } else if k == "precision" {
                apply_precision(&mut s, &v);
            } else if k == "gradient_checkpointing" {
                let _ = s.set("disable_gradient_checkpointing", Val::Bool(v != "true"));
            } else if s.set_text(&k, &v).is_err() {
                return; // the input shows the old value; the error is in the field's constraints
            }
            // The share link is rewritten in the next task, after the numbers are on screen
            // (history.replaceState costs more than the whole recomputation).
            let link = s.clone();
            yew::platform::spawn_local(async move {
                yew::platform::time::sleep(std::time::Duration::ZERO).await;
                update_url(&link);
            });
            settings.set(s);
        })
    };
    let on = |k: &'static str| {
        let set = set.clone();
        Callback::from(move |e: Event| {
            let v = e
                .target_unchecked_into::<web_sys::HtmlInputElement>()
                .value();
            set.emit((k.to_string(), v));
        })
    };
    let on_check = |k: &'static str| {
        let set = set.clone();
        Callback::from(move |e: Event| {
            let c = e
                .target_unchecked_into::<web_sys::HtmlInputElement>()
                .checked();
            set.emit((k.to_string(), c.to_string()));
        })
    };
    let config_json = use_state(|| None::<String>);
    let on_config = {
        let config_json = config_json.clone();
        Callback::from(move |e: Event| {
            let v = e
                .target_unchecked_into::<web_sys::HtmlTextAreaElement>()
                .value();
            config_json.set((!v.trim().is_empty()).then_some(v));
        })
    };
    let on_upload = {
        let config_json = config_json.clone();
        Callback::from(move |e: Event| {
            let input = e.target_unchecked_into::<web_sys::HtmlInputElement>();
            let Some(file) = input.files().and_then(|f| f.get(0)) else {
                return;
            };
            let config_json = config_json.clone();
            wasm_bindgen_futures::spawn_local(async move {
                if let Ok(text) = wasm_bindgen_futures::JsFuture::from(file.text()).await {
                    config_json.set(text.as_string().filter(|t| !t.trim().is_empty()));
                }
            });
        })
    };
    // Record when the first render finished, for `cargo xtask bench-web`.
    use_effect_with((), |_| {
        if let Some(w) = web_sys::window() {
            let t = w.performance().map(|p| p.now()).unwrap_or(0.0);
            let _ = js_sys::Reflect::set(&w, &"__lorafitFirstRenderMs".into(), &t.into());
        }
    });
    let s = &*settings;
    let cfg = (*config_json).clone();
    let result = compute_with(s, cfg.as_deref());
    // The method comparison and the searches (~30 estimates) run in the task after the headline
    // is on screen, and not at all when only the language changes.
    let secondary = use_state(Secondary::default);
    {
        let secondary = secondary.clone();
        use_effect_with((s.clone(), cfg.clone()), move |(s, cfg)| {
            let (s, cfg) = (s.clone(), cfg.clone());
            yew::platform::spawn_local(async move {
                yew::platform::time::sleep(std::time::Duration::ZERO).await;
                secondary.set(Secondary::of(&s, cfg.as_deref()));
            });
        });
    }

    // The GPU alias selects its catalog entry; unset keys show their defaults.
    let current_gpu = catalog::find_gpu(&get_str(s, "gpu"))
        .map(|g| g.id.clone())
        .unwrap_or_default();
    let or = |k: &str, d: &str| {
        s.get(k)
            .map(|v| v.to_string())
            .unwrap_or_else(|| d.to_string())
    };
    let gpu_options: Html = std::iter::once(html! { <option value="" selected={current_gpu.is_empty()}>{"—"}</option> })
        .chain(catalog::gpus().iter().map(|g| html! { <option value={g.id.clone()} selected={current_gpu == g.id}>{&g.name}</option> }))
        .collect();
    let check = |key: &'static str| -> Html {
        html! { <input type="checkbox" data-testid={key} checked={s.get(key) == Some(&Val::Bool(true))} onchange={on_check(key)} /> }
    };
    // A checkbox whose LLaMA-Factory default is true (freeze_vision_tower, …).
    let check_on = |key: &'static str| -> Html {
        html! { <input type="checkbox" data-testid={key} checked={s.get(key) != Some(&Val::Bool(false))} onchange={on_check(key)} /> }
    };
    // From the model, not the estimate: an error (too many image tokens) keeps the inputs.
    let vision = catalog::find_model(&get_str(s, "model_name_or_path"))
        .ok()
        .and_then(|m| m.arch().ok())
        .and_then(|a| a.vision);
    let has_audio = vision.as_ref().is_some_and(|v| v.audio.is_some());
    let tower = vision.map(|v| v.kind);
    let has_vision = tower.is_some() || matches!(&result, Ok(e) if e.vision.is_some());
    let takes_images = tower.is_none_or(lorafit_core::arch::VisionKind::takes_images);
    let internvl = tower == Some(lorafit_core::arch::VisionKind::InternVit);
    let has_video = tower.is_some_and(lorafit_core::arch::VisionKind::has_video);
    // Families, each pointing at its first catalog id: picking one sets the model.
    let current_family = catalog::find_model(&get_str(s, "model_name_or_path"))
        .map(|m| m.family.clone())
        .unwrap_or_default();
    let mut families: Vec<(&str, &str, usize)> = Vec::new();
    for m in catalog::models() {
        match families.iter_mut().find(|f| f.0 == m.family) {
            Some(f) => f.2 += 1,
            None => families.push((&m.family, &m.id, 1)),
        }
    }
    let family_options: Html = std::iter::once(html! { <option value="" selected={current_family.is_empty()}>{"—"}</option> })
        .chain(families.iter().map(|(f, id, n)| html! { <option value={id.to_string()} selected={current_family == *f}>{format!("{f} ({n})")}</option> }))
        .collect();
    let select = |key: &'static str, opts: &[(&str, &str)], current: &str| -> Html {
        let o: Html = opts.iter().map(|(v, label)| html! { <option value={v.to_string()} selected={*v == current}>{*label}</option> }).collect();
        html! { <select data-testid={key} onchange={on(key)}>{o}</select> }
    };
    let number = |key: &'static str, min: &str, max: &str, default: &str| -> Html {
        let v = s
            .get(key)
            .map(|v| v.to_string())
            .unwrap_or_else(|| default.to_string());
        html! { <input type="number" data-testid={key} min={min.to_string()} max={max.to_string()} value={v} onchange={on(key)} /> }
    };
    let gc = s.get("disable_gradient_checkpointing") != Some(&Val::Bool(true));
    let toggle_lang = {
        let lang = lang.clone();
        Callback::from(move |_| {
            lang.set(if *lang == Lang::En {
                Lang::Zh
            } else {
                Lang::En
            })
        })
    };
    let copy_link = Callback::from(move |_| {
        if let Some(w) = web_sys::window() {
            let href = w.location().href().unwrap_or_default();
            let _ = w.navigator().clipboard().write_text(&href);
        }
    });

    let yaml = export::to_llamafactory_yaml(s, false);
    let plan = s.plan().ok();
    let deepspeed_json = plan.as_ref().filter(|p| p.zero.deepspeed).map(|p| {
        (
            export::deepspeed_file_name(&p.zero),
            export::to_deepspeed_json(&p.zero),
        )
    });
    let output = match &result {
        Err(e) => html! { <div class="error" data-testid="error">{e}</div> },
        Ok(e) => {
            let fits = e
                .fits
                .map(|f| {
                    if f {
                        t(l, "fits")
                    } else {
                        t(l, "does_not_fit")
                    }
                })
                .unwrap_or("");
            let legend: Html = parts(e).iter().zip(COLORS).map(|(&v, (name, color))| html! {
                <tr title={t(l, formula_key(name))}><td><span class="swatch" style={format!("background:{color}")}></span>{t(l, name)}</td><td class="num">{gib(v)}</td></tr>
            }).collect();
            let costs: Html = e.costs.iter().map(|c| html! {
                <tr><td>{&c.provider}</td><td>{&c.kind}</td><td class="num">{format!("${:.2}/h", c.usd_per_hour)}</td>
                <td class="num">{format!("${:.2}", c.cost_usd)}</td><td><a href={c.source.clone()} rel="noopener" target="_blank">{&c.as_of}</a></td></tr>
            }).collect();
            let methods: Html = secondary.methods
                .iter()
                .map(|(label, r)| {
                    match r {
                        Ok(x) => html! { <tr><th scope="row">{*label}</th><td class="num">{gib(x.peak_reserved_bytes)}</td>
                            <td>{x.fits.map(|f| if f { "✓" } else { "✗" }).unwrap_or("")}</td>
                            <td class="num">{x.total_seconds.map(hours).unwrap_or_default()}</td>
                            <td class="num">{x.cost_usd.map(|c| format!("${c:.2}")).unwrap_or_default()}</td></tr> },
                        Err(err) => html! { <tr><th scope="row">{*label}</th><td colspan="4">{err}</td></tr> },
                    }
                })
                .collect();
            let (largest_b, longest) = (secondary.largest_batch, secondary.longest_cutoff);
            html! {
                <>
                <div class="headline">
                    <div data-testid="peak-per-gpu" data-bytes={e.peak_reserved_bytes.to_string()} class="peak">{gib(e.peak_reserved_bytes)}</div>
                    <div class={if e.fits == Some(false) { "fit no" } else { "fit yes" }} data-testid="fits">{fits}</div>
                    <div class="sub">{format!("{} · torch max_memory_allocated {}", t(l, "per_gpu_smi"), gib(e.peak_allocated_bytes))}</div>
                </div>
                <p class="sub" data-testid="plan">{plan.as_ref().map(|p| p.describe()).unwrap_or_default()}</p>
                if let Some(v) = &e.vision {
                    <p class="sub" data-testid="vision" data-tokens={v.image_tokens_per_sample.to_string()} data-video-tokens={v.video_tokens_per_sample.to_string()} data-audio-tokens={v.audio_tokens_per_sample.to_string()}>{format!("{}: {:.2} B {} · {} {} · {} {} = {} tokens{}",
                        t(l, if v.takes_images { "vision" } else { "audio_encoder" }), v.tower_params as f64 / 1e9, if v.tower_trained { t(l, "trained") } else { t(l, "frozen") },
                        t(l, "projector"), if v.projector_trained { t(l, "trained") } else { t(l, "frozen") },
                        v.images_per_sample, t(l, "images"), v.image_tokens_per_sample,
                        if v.videos_per_sample > 0 { format!(" · {} {} × {} {} = {} tokens", v.videos_per_sample, t(l, "videos"), v.video_frames, t(l, "frames"), v.video_tokens_per_sample) } else { String::new() })}
                        if v.audios_per_sample > 0 { {format!(" · {} {} = {} tokens", v.audios_per_sample, t(l, "audios"), v.audio_tokens_per_sample)} }</p>
                }
                if e.host_ram_bytes > 0 {
                    <p class="sub" data-testid="host-ram" data-bytes={e.host_ram_bytes.to_string()}>{format!("{}: {}", t(l, "host_ram"), gib(e.host_ram_bytes))}</p>
                }
                if !e.warnings.is_empty() {
                    <ul class="notes" data-testid="notes">{ e.warnings.iter().map(|w| html! { <li>{w}</li> }).collect::<Html>() }</ul>
                }
                <Bar e={e.clone()} />
                <table class="legend">{legend}</table>
                <h2>{t(l, "chart")}</h2>
                <Chart settings={s.clone()} config_json={cfg.clone()} />
                <p class="sub">{format!("{}: {}", t(l, "largest_batch"), largest_b.map(|b| b.to_string()).unwrap_or("—".into()))}
                   {" · "}{format!("{}: {}", t(l, "longest_cutoff"), longest.map(|b| b.to_string()).unwrap_or("—".into()))}</p>
                <h2>{t(l, "every_gpu")}</h2>
                <div class="gpus" data-testid="every-gpu">{ catalog::gpus().iter().map(|g| {
                    let ok = e.peak_reserved_bytes <= g.memory_bytes();
                    html! { <span class={if ok { "chip yes" } else { "chip no" }} title={g.name.clone()}>{format!("{} {} {}", if ok { "✓" } else { "✗" }, g.id, gib(g.memory_bytes()))}</span> }
                }).collect::<Html>() }</div>
                <h2>{t(l, "time_cost")}</h2>
                <p data-testid="time">{format!("{:.0} tokens/s · {:.2} s/step · {}", e.tokens_per_second, e.step_seconds,
                    e.total_seconds.map(hours).unwrap_or_else(|| t(l, "need_tokens").to_string()))}</p>
                <table class="costs">{costs}</table>
                <h2>{t(l, "compare")}</h2>
                <table data-testid="compare"><tr><th scope="col">{t(l, "method")}</th><th scope="col">{t(l, "peak")}</th><th scope="col">{t(l, "fits")}</th><th scope="col">{t(l, "time")}</th><th scope="col">{t(l, "cost")}</th></tr>{methods}</table>
                <h2>{t(l, "how")}</h2>
                <p class="how">{t(l, "how_text")}</p>
                <h2>{"LLaMA-Factory YAML"}</h2>
                <a data-testid="download-yaml" download="lorafit_sft.yaml" href={data_url("text/yaml", &yaml)}>{t(l, "download")}{" lorafit_sft.yaml"}</a>
                <pre data-testid="yaml">{yaml.clone()}</pre>
                if let Some(ds) = deepspeed_json.clone() {
                    <h2>{"DeepSpeed"}</h2>
                    <a data-testid="download-deepspeed" download={ds.0.clone()} href={data_url("application/json", &ds.1)}>{t(l, "download")}{" "}{ds.0.clone()}</a>
                    <pre data-testid="deepspeed-json">{ds.1}</pre>
                }
                <h2>{"lorafit train"}</h2>
                <pre data-testid="command">{export::to_train_command(s, "lorafit_sft.yaml")}</pre>
                </>
            }
        }
    };
    let warn: Html = warnings.iter().map(|w| html! { <li>{w}</li> }).collect();

    html! {
        <main>
            <header>
                <h1>{"lorafit"}</h1><span class="tag">{t(l, "tagline")}</span>
                <button data-testid="lang" onclick={toggle_lang}>{if l == Lang::En { "中文" } else { "English" }}</button>
                <button data-testid="copy-link" onclick={copy_link}>{t(l, "copy_link")}</button>
            </header>
            if !warnings.is_empty() { <ul class="warnings" data-testid="warnings">{warn}</ul> }
            <div class="grid">
            <section class="inputs">
                <label title={t(l, "model_help")}>{t(l, "model")}
                    <input type="search" list="model-list" data-testid="model_name_or_path" placeholder="Qwen/Qwen2.5-7B, 7B…"
                        value={get_str(s, "model_name_or_path")} onchange={on("model_name_or_path")} />
                    <ModelList /></label>
                <label title={t(l, "family_help")}>{t(l, "family")}
                    <select data-testid="family" onchange={on("model_name_or_path")}>{family_options}</select></label>
                if has_audio {
                    <label title={t(l, "audios_help")}>{"audios_per_sample"}{ number("audios_per_sample", "0", "256", "0") }</label>
                    <label title={t(l, "audio_seconds_help")}>{"audio_seconds"}{ number("audio_seconds", "0.01", "86400", "10") }</label>
                }
                if has_vision {
                    if takes_images {
                    <label title={t(l, "images_help")}>{"images_per_sample"}{ number("images_per_sample", "0", "1024", "0") }</label>
                    <label title={t(l, "pixels_help")}>{"image_max_pixels"}{ number("image_max_pixels", "1", "100000000", "589824") }</label>
                    }
                    if internvl {
                        <label title={t(l, "crop_help")}>{ check("crop_to_patches") }{"crop_to_patches"}</label>
                    }
                    if has_video {
                        <label title={t(l, "videos_help")}>{"videos_per_sample"}{ number("videos_per_sample", "0", "64", "0") }</label>
                        <label title={t(l, "video_seconds_help")}>{"video_seconds"}{ number("video_seconds", "0.01", "86400", "10") }</label>
                        <label title={t(l, "video_pixels_help")}>{"video_max_pixels"}{ number("video_max_pixels", "1", "100000000", "65536") }</label>
                    }
                    <label title={t(l, "freeze_vt_help")}>{ check_on("freeze_vision_tower") }{"freeze_vision_tower"}</label>
                    <label title={t(l, "freeze_vt_help")}>{ check_on("freeze_multi_modal_projector") }{"freeze_multi_modal_projector"}</label>
                    <label title={t(l, "freeze_vt_help")}>{ check("freeze_language_model") }{"freeze_language_model"}</label>
                }
                <label title={t(l, "stage_help")}>{"stage"}
                    { select("stage", &[("pt", "pt"), ("sft", "sft"), ("rm", "rm (reward model)"), ("dpo", "dpo"), ("kto", "kto"), ("ppo", "ppo")], &or("stage", "sft")) }</label>
                if s.get("stage").is_some_and(|v| v.to_string() == "dpo") {
                    <label title={t(l, "pref_help")}>{"pref_loss"}
                        { select("pref_loss", &[("sigmoid", "sigmoid (DPO)"), ("hinge", "hinge"), ("ipo", "ipo"), ("orpo", "orpo"), ("simpo", "simpo")], &or("pref_loss", "sigmoid")) }</label>
                }
                <label title={t(l, "method_help")}>{t(l, "method")}
                    { select("method", &[("full", "Full (bf16 mixed)"), ("full_pure", "Full (pure_bf16)"), ("freeze", "Freeze"),
                        ("lora", "LoRA"), ("qlora4", "QLoRA 4-bit"), ("qlora8", "QLoRA 8-bit"), ("oft", "OFT")], method_of(s)) }</label>
                <label title={t(l, "config_help")}>{"config.json"}
                    <textarea data-testid="config_json" rows="2" placeholder="{ \"model_type\": \"llama\", … }" onchange={on_config} value={(*config_json).clone().unwrap_or_default()} />
                    <input type="file" accept=".json,application/json" data-testid="config_upload" onchange={on_upload} /></label>
                <label title={t(l, "precision_help")}>{t(l, "precision")}
                    { select("precision", &[("bf16", "bf16 mixed"), ("fp16", "fp16 mixed"), ("pure_bf16", "pure_bf16"), ("fp32", "fp32")], precision_of(s)) }</label>
                <label title={t(l, "rank_help")}>{"lora_rank"}{ number("lora_rank", "1", "8192", "8") }</label>
                <label title={t(l, "alpha_help")}>{"lora_alpha"}{ number("lora_alpha", "0", "1000000", "") }</label>
                <label title={t(l, "target_help")}>{"lora_target"}
                    <input type="text" data-testid="lora_target" value={or("lora_target", "all")} onchange={on("lora_target")} /></label>
                <label title={t(l, "dora_help")}>{ check("use_dora") }{"use_dora"}</label>
                <label title={t(l, "rslora_help")}>{ check("use_rslora") }{"use_rslora"}</label>
                <label title={t(l, "batch_help")}>{"per_device_train_batch_size"}{ number("per_device_train_batch_size", "1", "65536", "8") }</label>
                <label title={t(l, "ga_help")}>{"gradient_accumulation_steps"}{ number("gradient_accumulation_steps", "1", "65536", "1") }</label>
                <label title={t(l, "cutoff_help")}>{"cutoff_len"}{ number("cutoff_len", "1", "10000000", "2048") }</label>
                <label title={t(l, "gc_help")}><input type="checkbox" data-testid="gradient_checkpointing" checked={gc} onchange={on_check("gradient_checkpointing")} />{t(l, "gc")}</label>
                <label title={t(l, "attn_help")}>{"flash_attn"}{ select("flash_attn", &[("auto", "auto (sdpa)"), ("sdpa", "sdpa"), ("fa2", "fa2"), ("disabled", "eager")], &or("flash_attn", "auto")) }</label>
                <label title={t(l, "optim_help")}>{"optim"}{ select("optimizer", &[("adamw_torch", "adamw_torch"), ("adamw_8bit", "adamw_8bit"), ("paged_adamw_8bit", "paged_adamw_8bit"),
                    ("adamw_torch_4bit", "adamw_torch_4bit"), ("lion_8bit", "lion_8bit"), ("adafactor", "adafactor"), ("sgd", "sgd"), ("lomo", "lomo"),
                    ("galore", "GaLore (use_galore)"), ("apollo", "APOLLO (use_apollo)"), ("badam", "BAdam (use_badam)"), ("adam_mini", "Adam-mini (use_adam_mini)"), ("muon", "Muon (use_muon)")], &optimizer_of(s)) }</label>
                <label title={t(l, "liger_help")}>{ check("enable_liger_kernel") }{"enable_liger_kernel"}</label>
                <label title={t(l, "unsloth_help")}>{ check("use_unsloth_gc") }{"use_unsloth_gc"}</label>
                <label title={t(l, "gpu_help")}>{t(l, "gpu")}<select data-testid="gpu" onchange={on("gpu")}>{gpu_options}</select></label>
                <label title={t(l, "ngpu_help")}>{"num_gpus"}{ number("num_gpus", "1", "4096", "1") }</label>
                <label title={t(l, "ds_help")}>{"deepspeed / fsdp"}{ select("sharding", &[("", "—"), ("ds_z2_config.json", "ZeRO-2"), ("ds_z2_offload_config.json", "ZeRO-2 offload"), ("ds_z3_config.json", "ZeRO-3"), ("ds_z3_offload_config.json", "ZeRO-3 offload"),
                    ("fsdp:full_shard", "FSDP full_shard"), ("fsdp:full_shard offload", "FSDP full_shard offload")], &sharding_of(s)) }</label>
                <label title={t(l, "tokens_help")}>{"dataset_tokens"}{ number("dataset_tokens", "0", "1000000000000000", "") }</label>
                <label title={t(l, "epochs_help")}>{"num_train_epochs"}{ number("num_train_epochs", "0", "1000", "3") }</label>
                <label title={t(l, "price_help")}>{"price_per_hour"}{ number("price_per_hour", "0", "1000000", "") }</label>
            </section>
            <section class="outputs">{output}</section>
            </div>
        </main>
    }
}

/// Mount the page (called by the JS glue when the module loads).
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen(start)]
pub fn start() {
    yew::Renderer::<App>::new().render();
}
