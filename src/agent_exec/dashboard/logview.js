// A log that follows a running job with bounded memory: it fetches byte slices from the
// last offset it saw, renders ANSI SGR colours (or strips every escape sequence) into text
// nodes, and drops its oldest nodes past MAX_CHARS. The raw file is a download away.
import { clear, h } from "./dom.js";

const TAIL_BYTES = 128 * 1024; // first view of a log: its last 128 KiB
const SLICE_BYTES = 128 * 1024; // then what is new, up to this much per request
const MAX_CHARS = 512 * 1024; // kept in the page...
const KEEP_CHARS = 384 * 1024; // ...trimmed back to this when exceeded
const JUMP_BYTES = 2 * 1024 * 1024; // further behind than this: skip ahead to the tail
const MAX_SLICES_PER_POLL = 4;

// CSI (colours and cursor moves), OSC (titles, links) and two-byte escapes.
const ESCAPE = /\x1b(?:\[([0-?]*)[ -/]*([@-~])|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])/g;
const ESCAPE_AT = new RegExp(ESCAPE.source, "y");
const CONTROL = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/g;
const PREFIX = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) \[(STDOUT|STDERR)\] /;
const CUBE = [0, 95, 135, 175, 215, 255];

function plainStyle() {
  return { bold: false, dim: false, italic: false, underline: false, fg: null, bg: null };
}

function colour256(n) {
  if (n < 16) return n;
  if (n >= 232) {
    const v = 8 + 10 * (n - 232);
    return `rgb(${v},${v},${v})`;
  }
  const i = n - 16;
  return `rgb(${CUBE[Math.floor(i / 36)]},${CUBE[Math.floor(i / 6) % 6]},${CUBE[i % 6]})`;
}

/** Apply one SGR parameter list to ``style`` (unknown codes are ignored). */
function applySgr(style, params) {
  const codes = params === "" ? [0] : params.split(/[;:]/).map((p) => (p === "" ? 0 : Number(p)));
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i];
    if (c === 0) Object.assign(style, plainStyle());
    else if (c === 1) style.bold = true;
    else if (c === 2) style.dim = true;
    else if (c === 3) style.italic = true;
    else if (c === 4) style.underline = true;
    else if (c === 22) style.bold = style.dim = false;
    else if (c === 23) style.italic = false;
    else if (c === 24) style.underline = false;
    else if (c >= 30 && c <= 37) style.fg = c - 30;
    else if (c >= 90 && c <= 97) style.fg = c - 90 + 8;
    else if (c === 39) style.fg = null;
    else if (c >= 40 && c <= 47) style.bg = c - 40;
    else if (c >= 100 && c <= 107) style.bg = c - 100 + 8;
    else if (c === 49) style.bg = null;
    else if (c === 38 || c === 48) {
      let value = null;
      if (codes[i + 1] === 5 && codes[i + 2] !== undefined) {
        value = colour256(codes[i + 2] & 255);
        i += 2;
      } else if (codes[i + 1] === 2 && codes[i + 4] !== undefined) {
        value = `rgb(${codes[i + 2] & 255},${codes[i + 3] & 255},${codes[i + 4] & 255})`;
        i += 4;
      }
      if (c === 38) style.fg = value;
      else style.bg = value;
    }
  }
}

function styledNode(text, style) {
  const plain = !style.bold && !style.dim && !style.italic && !style.underline && style.fg === null && style.bg === null;
  if (plain) return document.createTextNode(text);
  const span = document.createElement("span");
  const classes = [];
  if (style.bold) classes.push("a-b");
  if (style.dim) classes.push("a-d");
  if (style.italic) classes.push("a-i");
  if (style.underline) classes.push("a-u");
  if (typeof style.fg === "number") classes.push(`f${style.fg}`);
  else if (style.fg) span.style.color = style.fg; // CSSOM: allowed by the CSP
  if (typeof style.bg === "number") classes.push(`g${style.bg}`);
  else if (style.bg) span.style.background = style.bg;
  span.className = classes.join(" ");
  span.textContent = text;
  return span;
}

function cleanText(text) {
  return text.replace(/\r\n/g, "\n").replace(/\r/g, "\n").replace(CONTROL, "");
}

export class LogView {
  constructor(pre, note) {
    this.pre = pre;
    this.note = note;
    this.colours = true;
    this.follow = true;
    this.jobId = null;
    this.stream = "full";
    this.generation = 0;
    this.pre.addEventListener("scroll", () => {
      const atEnd = this.pre.scrollTop + this.pre.clientHeight >= this.pre.scrollHeight - 24;
      if (atEnd !== this.follow) {
        this.follow = atEnd;
        this.onFollowChange?.(atEnd);
      }
    });
    this.reset(null, "full");
  }

  /** Start over on a job/stream: the next poll fetches the tail. */
  reset(jobId, stream) {
    this.jobId = jobId;
    this.stream = stream;
    this.generation += 1;
    this.offset = null;
    this.total = 0;
    this.chars = 0;
    this.skipped = false;
    this.style = plainStyle();
    this.pending = "";
    this.lineStart = true;
    clear(this.pre);
    this.placeholder = h("span", { class: "placeholder", text: "no output yet" });
    this.pre.append(this.placeholder);
    this.note.textContent = "";
  }

  /** Fetch and show what is new; ``api(path)`` resolves to the JSON document. */
  async poll(api) {
    let generation = this.generation;
    for (let round = 0; round < MAX_SLICES_PER_POLL; round++) {
      const query = this.offset === null ? `max=${TAIL_BYTES}` : `offset=${this.offset}&max=${SLICE_BYTES}`;
      const id = encodeURIComponent(this.jobId);
      const doc = await api(`/ui/api/jobs/${id}/log/${encodeURIComponent(this.stream)}?${query}`);
      if (generation !== this.generation) return; // the user switched stream or job meanwhile
      if (this.offset !== null && doc.total_bytes < this.offset) {
        this.reset(this.jobId, this.stream); // the log was emptied (the job restarted in place)
        generation = this.generation;
        continue;
      }
      if (this.offset !== null && doc.total_bytes - doc.range[1] > JUMP_BYTES) {
        this.reset(this.jobId, this.stream); // too far behind to catch up: show the tail instead
        generation = this.generation;
        this.skipped = true;
        continue;
      }
      if (this.offset === null && doc.range[0] > 0) this.skipped = true;
      this.offset = doc.range[1];
      this.total = doc.total_bytes;
      if (doc.text) this.write(doc.text);
      this.updateNote();
      if (doc.range[1] >= doc.total_bytes || doc.range[1] === doc.range[0]) break;
    }
  }

  updateNote() {
    if (this.skipped) {
      const kib = (this.total / 1024).toFixed(0);
      this.note.textContent = `Showing the end of a ${kib} KiB log (the page keeps at most ${MAX_CHARS / 1024} KiB). Download raw for all of it.`;
    } else {
      this.note.textContent = "";
    }
  }

  write(text) {
    if (this.placeholder) {
      this.placeholder.remove();
      this.placeholder = null;
    }
    const fragment = document.createDocumentFragment();
    text = this.pending + text;
    this.pending = "";
    // An escape sequence or CR cut by the end of the slice waits for the next one.
    const lastEsc = text.lastIndexOf("\x1b");
    if (lastEsc >= 0 && text.length - lastEsc < 256) {
      ESCAPE_AT.lastIndex = lastEsc;
      if (!ESCAPE_AT.test(text)) {
        this.pending = text.slice(lastEsc);
        text = text.slice(0, lastEsc);
      }
    }
    if (text.endsWith("\r")) {
      this.pending = "\r" + this.pending;
      text = text.slice(0, -1);
    }
    if (this.stream === "full") this.writeCombined(fragment, text);
    else this.writeStyled(fragment, text);
    this.pre.append(fragment);
    this.chars += text.length;
    this.trim();
    if (this.follow) this.pre.scrollTop = this.pre.scrollHeight;
  }

  /** Combined log lines start with "<timestamp> [STDOUT] ": show those dimmed and labelled. */
  writeCombined(fragment, text) {
    const lines = text.split("\n");
    lines.forEach((line, i) => {
      if (this.lineStart) {
        const match = PREFIX.exec(line);
        if (match) {
          const local = new Date(Date.parse(match[1])).toLocaleTimeString([], { hour12: false });
          fragment.append(h("span", { class: "ts", title: match[1], text: local }), " ");
          const err = match[2] === "STDERR";
          fragment.append(h("span", { class: err ? "st-err" : "st-out", text: err ? "err" : "out" }), " ");
          this.style = plainStyle(); // lines of the two streams interleave: colours do not carry over
          line = line.slice(match[0].length);
        }
      }
      this.writeStyled(fragment, i < lines.length - 1 ? `${line}\n` : line);
      this.lineStart = i < lines.length - 1 || (line === "" && this.lineStart);
    });
  }

  writeStyled(fragment, text) {
    if (!text) return;
    let last = 0;
    ESCAPE.lastIndex = 0;
    let match;
    while ((match = ESCAPE.exec(text)) !== null) {
      this.emit(fragment, text.slice(last, match.index));
      if (match[2] === "m" && this.colours) applySgr(this.style, match[1]);
      last = ESCAPE.lastIndex;
    }
    this.emit(fragment, text.slice(last));
  }

  emit(fragment, text) {
    const clean = cleanText(text);
    if (!clean) return;
    fragment.append(this.colours ? styledNode(clean, this.style) : document.createTextNode(clean));
  }

  trim() {
    if (this.chars <= MAX_CHARS) return;
    while (this.chars > KEEP_CHARS && this.pre.firstChild) {
      this.chars -= this.pre.firstChild.textContent.length;
      this.pre.firstChild.remove();
    }
    this.skipped = true;
    this.updateNote();
  }
}
