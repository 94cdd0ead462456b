// A tiny SMTP client for the browser tests: one message, each reply checked.
import net from "node:net";

export function sendMail(port, from, to, data) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, "127.0.0.1");
    const steps = [null, "EHLO browser.test", `MAIL FROM:<${from}>`, ...to.map((t) => `RCPT TO:<${t}>`), "DATA", data.replace(/\r?\n/g, "\r\n").replace(/^\./gm, "..") + "\r\n.", "QUIT"];
    const expect = [220, 250, 250, ...to.map(() => 250), 354, 250, 221];
    let buf = "";
    let i = 0;
    const timer = setTimeout(() => { sock.destroy(); reject(new Error("SMTP timeout")); }, 20000);
    sock.on("data", (chunk) => {
      buf += chunk.toString("latin1");
      for (;;) {
        const m = buf.match(/^(\d{3}) .*\r\n/m);
        if (!m) return;
        const end = buf.indexOf(m[0]) + m[0].length;
        const code = Number(m[1]);
        buf = buf.slice(end);
        if (code !== expect[i]) { clearTimeout(timer); sock.destroy(); reject(new Error(`step ${i}: got ${code}`)); return; }
        i += 1;
        if (i >= steps.length) { clearTimeout(timer); sock.end(); resolve(); return; }
        sock.write(steps[i] + "\r\n");
      }
    });
    sock.on("error", (e) => { clearTimeout(timer); reject(e); });
  });
}
