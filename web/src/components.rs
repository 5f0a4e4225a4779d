//! The page's components besides the app: the breakdown bar, the peak chart (drawn by
//! lorafit-core), the catalog's datalist.

use lorafit_core::catalog;
use lorafit_core::estimate::{self, Estimate};
use lorafit_core::plan::Settings;
use yew::prelude::*;

use crate::format::*;

#[derive(Properties, PartialEq, Debug)]
pub struct BarProps {
    pub e: Estimate,
}

/// (part, colour): the same colours as the chart's (lorafit-core).
pub(crate) const COLORS: [(&str, &str); 7] = {
    let n = lorafit_core::memory::Breakdown::NAMES;
    let c = lorafit_core::chart::PART_COLOURS;
    [
        (n[0], c[0]),
        (n[1], c[1]),
        (n[2], c[2]),
        (n[3], c[3]),
        (n[4], c[4]),
        (n[5], c[5]),
        (n[6], c[6]),
    ]
};

pub(crate) fn parts(e: &Estimate) -> [u64; 7] {
    e.breakdown.parts().map(|(_, v)| v)
}

/// The stacked bar of the breakdown, against the GPU's memory.
#[function_component(Bar)]
pub fn bar(p: &BarProps) -> Html {
    let e = &p.e;
    let scale = e
        .gpu_memory_bytes
        .unwrap_or(0)
        .max(e.peak_reserved_bytes)
        .max(1) as f64;
    let mut x = 0.0;
    let rects: Html = parts(e)
        .iter()
        .zip(COLORS)
        .map(|(&v, (name, color))| {
            let w = v as f64 / scale * 600.0;
            let r = html! { <rect x={format!("{x:.1}")} y="0" width={format!("{w:.1}")} height="28" fill={color}>
                <title>{format!("{name}: {}", gib(v))}</title></rect> };
            x += w;
            r
        })
        .collect();
    let limit = e.gpu_memory_bytes.map(|m| m as f64 / scale * 600.0);
    html! {
        <svg data-testid="breakdown-bar" viewBox="0 0 600 40" width="100%" height="40" preserveAspectRatio="none" role="img">
            { rects }
            if let Some(l) = limit {
                <line x1={format!("{l:.1}")} x2={format!("{l:.1}")} y1="0" y2="40" stroke="#222" stroke-width="2" stroke-dasharray="4 2" />
            }
        </svg>
    }
}

#[derive(Properties, PartialEq, Debug)]
pub struct ChartProps {
    pub settings: Settings,
    pub config_json: Option<String>,
}

/// The peak against cutoff_len and batch size (lorafit-core's SVG). Its ~34 estimates and the
/// SVG's DOM run in the task after the numbers are on screen, like the share-link rewrite.
#[function_component(Chart)]
pub fn chart(p: &ChartProps) -> Html {
    let svg = use_state(String::new);
    {
        let svg = svg.clone();
        use_effect_with(
            (p.settings.clone(), p.config_json.clone()),
            move |(s, cfg)| {
                let (s, cfg) = (s.clone(), cfg.clone());
                yew::platform::spawn_local(async move {
                    yew::platform::time::sleep(std::time::Duration::ZERO).await;
                    let text = s
                        .plan()
                        .ok()
                        .and_then(|p| {
                            let (a, _) = estimate::resolve_model(&p, cfg.as_deref()).ok()?;
                            lorafit_core::chart::peak_chart_svg(&a, &p).ok()
                        })
                        .unwrap_or_default();
                    svg.set(text);
                });
            },
        );
    }
    html! { <div class="chart" data-testid="chart">{Html::from_html_unchecked((*svg).clone().into())}</div> }
}

/// The catalog as a `<datalist>`: a prop-less component, so re-renders of the page skip it. Its
/// ~350 options are written as one HTML string in a task of their own after the first render:
/// the browser's parser builds them in a few milliseconds, where one DOM call per element from
/// wasm kept the page's first task long (what Lighthouse's total blocking time counts).
#[function_component(ModelList)]
pub fn model_list() -> Html {
    let list = use_node_ref();
    {
        let list = list.clone();
        use_effect_with((), move |_| {
            yew::platform::spawn_local(async move {
                yew::platform::time::sleep(std::time::Duration::ZERO).await;
                if let Some(el) = list.cast::<web_sys::Element>() {
                    el.set_inner_html(&model_options());
                }
            });
        });
    }
    html! { <datalist id="model-list" ref={list}></datalist> }
}

/// `<option value="ID">FAMILY</option>` for every catalog id, escaped.
pub fn model_options() -> String {
    let esc = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    catalog::models()
        .iter()
        .map(|m| {
            format!(
                "<option value=\"{}\">{}</option>",
                esc(&m.id),
                esc(&m.family)
            )
        })
        .collect()
}
