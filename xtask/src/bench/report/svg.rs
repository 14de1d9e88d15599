//! chart.svg: the bar chart of the headline metrics.

use super::*;

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The `<svg>` element (white background, title, subtitle) of a chart; the caller closes it.
pub fn open(width: f64, height: f64, title: &str, subtitle: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r##"<rect width="100%" height="100%" fill="white"/><text x="20" y="24" font-size="16" font-weight="bold">{}</text><text x="20" y="42" fill="#555">{}</text>"##,
        esc(title),
        esc(subtitle)
    );
    s
}

/// A hand-written SVG: two panels (median TCP 1-stream Gbps, median UDP 64 B received kpps),
/// one bar per path, coloured by topology; paths without a figure are left out.
pub fn svg(runs: &[PathRun], subtitle: &str) -> String {
    let panels = [
        (TCP1, "TCP, 1 stream (Gbps)", 2usize),
        (UDP64, "UDP 64 B received (kpps)", 0),
    ];
    let bars: Vec<&PathRun> = runs.iter().filter(|r| r.unavailable.is_none()).collect();
    let n = bars.len().max(1);
    let bar_w = 34.0;
    let gap = 14.0;
    let panel_w = 60.0 + n as f64 * (bar_w + gap);
    let (plot_top, plot_h) = (70.0, 260.0);
    let width = 2.0 * panel_w + 60.0;
    let height = plot_top + plot_h + 120.0;
    let colour = |t: Topo| match t {
        Topo::Pair => "#4e79a7",
        Topo::Sandbox => "#f28e2b",
    };
    let mut s = open(width, height, "netshim bench: medians per path", subtitle);
    for (i, (key, title, decimals)) in panels.iter().enumerate() {
        let x0 = 30.0 + i as f64 * (panel_w + 20.0);
        let max = bars
            .iter()
            .filter_map(|r| r.median(key))
            .fold(0.0f64, f64::max);
        let scale = if max > 0.0 { plot_h / (max * 1.1) } else { 0.0 };
        let base_y = plot_top + plot_h;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="13" font-weight="bold">{}</text>"#,
            x0,
            plot_top - 12.0,
            esc(title)
        );
        let _ = writeln!(
            s,
            r##"<line x1="{x0:.1}" y1="{base_y:.1}" x2="{:.1}" y2="{base_y:.1}" stroke="#333"/>"##,
            x0 + panel_w - 20.0
        );
        for (j, run) in bars.iter().enumerate() {
            let x = x0 + 20.0 + j as f64 * (bar_w + gap);
            let label_x = x + bar_w / 2.0;
            let label_y = base_y + 12.0;
            let _ = writeln!(
                s,
                r#"<text x="{label_x:.1}" y="{label_y:.1}" text-anchor="end" transform="rotate(-40 {label_x:.1} {label_y:.1})">{}</text>"#,
                esc(&run.spec.id())
            );
            let Some(v) = run.median(key) else {
                let _ = writeln!(
                    s,
                    r##"<text x="{label_x:.1}" y="{:.1}" text-anchor="middle" fill="#999">–</text>"##,
                    base_y - 4.0
                );
                continue;
            };
            let h = v * scale;
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="{bar_w:.1}" height="{h:.1}" fill="{}"><title>{}: {v:.decimals$}</title></rect>"#,
                base_y - h,
                colour(run.spec.topo),
                esc(&run.spec.id())
            );
            let _ = writeln!(
                s,
                r#"<text x="{label_x:.1}" y="{:.1}" text-anchor="middle">{v:.decimals$}</text>"#,
                base_y - h - 4.0
            );
        }
    }
    let ly = height - 18.0;
    for (i, t) in [Topo::Pair, Topo::Sandbox].into_iter().enumerate() {
        let lx = 30.0 + i as f64 * 120.0;
        let _ = writeln!(
            s,
            r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{ly:.1}">{}</text>"#,
            ly - 10.0,
            colour(t),
            lx + 16.0,
            t.name()
        );
    }
    s.push_str("</svg>\n");
    s
}
