//! `index.html` beside a report's `index.md`: the same markdown rendered to one
//! self-contained page, each figure inlined as its SVG, every table sortable by a click on
//! a column header (or by `#sort=TABLE:COLUMN[:desc]` in the address, 0-based).
//!
//! The page is a function of the markdown and the figure files only, so it is as
//! reproducible as `index.md`.

use pulldown_cmark::{html, CowStr, Event, Options, Parser, Tag, TagEnd};

/// Sorting: numbers compare by their first number (`0.152 ± 0.039` by 0.152), other cells
/// as text; empty cells and `–` go last. Sets `data-sortable` on the body once ready.
const SCRIPT: &str = r#"
(function () {
  function key(cell) {
    var t = cell.textContent.trim();
    var m = t.match(/^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?/);
    return m ? { n: parseFloat(m[0]) } : { s: t };
  }
  function compare(a, b) {
    var x = key(a), y = key(b);
    if (x.n !== undefined && y.n !== undefined) return x.n - y.n;
    if (x.n !== undefined) return -1;
    if (y.n !== undefined) return 1;
    var ex = x.s === "" || x.s === "–", ey = y.s === "" || y.s === "–";
    if (ex !== ey) return ex ? 1 : -1;
    return x.s < y.s ? -1 : x.s > y.s ? 1 : 0;
  }
  function sort(table, column, descending) {
    var body = table.tBodies[0];
    if (!body) return;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var c = compare(a.cells[column], b.cells[column]);
      return descending ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      th.setAttribute("aria-sort", i === column ? (descending ? "descending" : "ascending") : "none");
    });
  }
  var tables = document.querySelectorAll("table");
  Array.prototype.forEach.call(tables, function (table) {
    if (!table.tHead) return;
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      th.addEventListener("click", function () {
        sort(table, i, th.getAttribute("aria-sort") === "ascending");
      });
    });
  });
  var wanted = /sort=(\d+):(\d+)(:desc)?/.exec(location.hash);
  if (wanted && tables[+wanted[1]]) sort(tables[+wanted[1]], +wanted[2], !!wanted[3]);
  document.body.setAttribute("data-sortable", String(tables.length));
})();
"#;

const STYLE: &str = "body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1b1b1b}\
main{max-width:1100px;margin:0 auto;padding:1rem 2rem}\
table{border-collapse:collapse;margin:1rem 0;font-variant-numeric:tabular-nums}\
th,td{border:1px solid #d0d0d0;padding:.25rem .6rem}\
th{background:#f3f3f3;cursor:pointer;user-select:none}\
th[aria-sort=ascending]::after{content:' ▲'}th[aria-sort=descending]::after{content:' ▼'}\
tbody tr:nth-child(even){background:#fafafa}\
figure{margin:1rem 0}svg{max-width:100%;height:auto}\
code{background:#f3f3f3;padding:0 .2rem}";

/// The page for a report's markdown. `svg_for(path)` gives the SVG text of a figure
/// linked as `path` (a `.png`), or `None` to keep the image link.
pub fn page(title: &str, markdown: &str, svg_for: impl Fn(&str) -> Option<String>) -> String {
    let mut events = Vec::new();
    let mut parser = Parser::new_ext(markdown, Options::ENABLE_TABLES);
    while let Some(event) = parser.next() {
        match event {
            Event::Start(Tag::Image { ref dest_url, .. }) => {
                let Some(svg) = svg_for(dest_url) else {
                    events.push(event);
                    continue;
                };
                // The alt text: the figure's title, already inside the SVG.
                for inner in parser.by_ref() {
                    if matches!(inner, Event::End(TagEnd::Image)) {
                        break;
                    }
                }
                let start = svg.find("<svg").unwrap_or(0);
                events.push(Event::InlineHtml(CowStr::from(format!("<figure>{}</figure>", svg[start..].trim_end()))));
            }
            // Text that looks like HTML (a `<` in a title or claim) is shown, never run.
            Event::Html(raw) | Event::InlineHtml(raw) => events.push(Event::Text(raw)),
            other => events.push(other),
        }
    }
    let mut body = String::new();
    html::push_html(&mut body, events.into_iter());
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{body}</main>\n<script>{SCRIPT}</script>\n</body>\n</html>\n",
        escape_text(title)
    )
}

fn escape_text(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD: &str = "# Report: demo\n\n| a | b |\n|---|--:|\n| x | 0.5 ± 0.1 |\n\n![A title](figures/f.png)\n\nVector version: [figures/f.svg](figures/f.svg)\n";

    #[test]
    fn tables_render_and_figures_are_inlined() {
        let svg = "<?xml version=\"1.0\"?>\n<svg width=\"10\" height=\"10\"><text>A title</text></svg>\n";
        let page = page("demo <1>", MD, |path| (path == "figures/f.png").then(|| svg.to_owned()));
        assert!(page.contains("<title>demo &lt;1&gt;</title>"), "{page}");
        assert!(page.contains("<table>") && page.contains("<th>a</th>") && page.contains("0.5 ± 0.1</td>"), "{page}");
        assert!(page.contains("<figure><svg width=\"10\" height=\"10\"><text>A title</text></svg></figure>"), "{page}");
        assert!(!page.contains("<?xml") && !page.contains("<img"), "{page}");
        assert!(page.contains("<a href=\"figures/f.svg\">"), "{page}");
    }

    #[test]
    fn html_in_the_markdown_is_shown_as_text() {
        let page = page("demo", "loss <b>below</b> 1\n\n<script>alert(1)</script>\n", |_| None);
        assert!(page.contains("loss &lt;b&gt;below&lt;/b&gt; 1"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && page.matches("<script>").count() == 1, "{page}");
    }

    #[test]
    fn a_figure_without_svg_stays_an_image() {
        let page = page("demo", MD, |_| None);
        assert!(page.contains("<img src=\"figures/f.png\" alt=\"A title\""), "{page}");
    }
}
