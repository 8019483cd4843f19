"""The page ``serve`` shows at ``GET /``: a question box, the answer streamed in, its sources.

Product text and answers are inserted with ``textContent`` only (never as HTML); the answer's
``[source: uid]`` becomes a link to that source by building text nodes and anchors. ``__MODE__``
is replaced by the mode the server was started with.
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>amazon_sft: ask about a product</title>
<style>
body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}
textarea{width:100%;height:4rem}#answer{white-space:pre-wrap;border-left:3px solid #888;padding:.5rem;min-height:2rem}
li{margin:.6rem 0}.desc{color:#444;font-size:.9rem}.meta{color:#777;font-size:.8rem}
.cited{border-left:3px solid #2a7;padding-left:.4rem}.unretrieved{text-decoration:line-through;color:#b33}.unused{opacity:.6}.tag{font-size:.75rem;margin-left:.4rem}
</style></head><body>
<h1>Ask about a product</h1>
<form id="f"><textarea id="q" name="q" placeholder="What is the description of ...? / Me fale sobre ..."></textarea>
<label>mode <select id="mode"><option value="grounded">grounded: answer from the catalogue records, cited</option>
<option value="closed">closed-book: from what tuning taught</option></select></label>
<button id="ask" type="submit">Ask</button></form>
<h2>Answer</h2><div id="answer"></div><div id="how" class="meta"></div>
<h2>Sources</h2><ol id="sources"></ol>
<script>
const $ = (id) => document.getElementById(id);
// Bidi overrides, embeddings and isolates in catalogue text would show a title reversed
// ("Invoice \u202etxt.exe" as "Invoice exe.txt"): dropped from every string shown, as the terminal does.
const shown = (k, v) => typeof v === "string" ? v.replace(/[\u202a-\u202e\u2066-\u2069]/g, "") : v;
$("mode").value = "__MODE__";
function linkCitations(uids) {  // "[source: uid]" of a shown source -> a link to it; text nodes only
  const text = $("answer").textContent; const parts = []; let last = 0;
  for (const m of text.matchAll(/\\[source: ([^\\]\\s]+)\\]/g)) {
    parts.push(document.createTextNode(text.slice(last, m.index)));
    let a;
    if (uids.has(m[1])) { a = document.createElement("a"); a.href = "#src-" + m[1]; a.className = "citation"; }
    else { a = document.createElement("span"); a.className = "unretrieved"; a.title = "not a record retrieval returned"; }
    a.textContent = m[0]; parts.push(a); last = m.index + m[0].length;
  }
  parts.push(document.createTextNode(text.slice(last))); $("answer").replaceChildren(...parts);
}
$("f").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("answer").textContent = ""; $("how").textContent = ""; $("sources").replaceChildren();
  $("ask").disabled = true;
  try {
    const r = await fetch("/api/stream", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({question: $("q").value, mode: $("mode").value})});
    if (!r.ok) {
      let why = r.status + " " + r.statusText;
      try { why = JSON.parse(await r.text(), shown).error || why; } catch (_) {}  // a proxy's page is not JSON
      $("answer").textContent = "error: " + why; return;
    }
    const reader = r.body.getReader(); const dec = new TextDecoder(); let buf = "";
    for (;;) {
      const {value, done} = await reader.read(); if (done) break;
      buf += dec.decode(value, {stream: true}); let i;
      while ((i = buf.indexOf("\\n")) >= 0) {
        const ev = JSON.parse(buf.slice(0, i), shown); buf = buf.slice(i + 1);
        if (ev.text !== undefined) $("answer").textContent += ev.text;
        if (ev.answer !== undefined) $("answer").textContent = ev.answer;
        if (ev.error !== undefined) $("answer").textContent = "error: " + ev.error;
        if (ev.doubt) $("how").textContent = "Abstained without generating: retrieval was not sure: " + ev.doubt;
        else if (ev.quoted) $("how").textContent = "The first record's answer: retrieval was sure, and the model's answer did not give it (it declined, cited another record or none, or cited it without its description).";
        if (ev.sources) { linkCitations(new Set(ev.sources.map((s) => s.uid))); for (const s of ev.sources) {
          const li = document.createElement("li"); li.id = "src-" + s.uid;
          const t = document.createElement("strong"); t.textContent = s.title; li.append(t);
          if (s.cited !== undefined) {
            li.className = s.cited ? "cited" : "unused";
            const tag = document.createElement("span"); tag.className = "tag";
            tag.textContent = s.cited ? "cited by the answer" : "not used by the answer"; li.append(tag);
          }
          const m = document.createElement("div"); m.className = "meta";
          m.textContent = `uid ${s.uid} · retrieval score ${s.score}` +
            (s.cosine !== undefined ? ` (words ${s.words_score}, meaning cosine ${s.cosine})` : "") +
            (s.answer_rougeL !== undefined ? ` · answer ROUGE-L vs description ${s.answer_rougeL}` : "");
          const d = document.createElement("div"); d.className = "desc"; d.textContent = s.content;
          li.append(m, d); $("sources").append(li);
        } }
      }
    }
  } finally { $("ask").disabled = false; }
});
</script></body></html>
"""
