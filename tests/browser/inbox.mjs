// The web inbox in headless Chromium: live arrival, open, text, HTML, attachment download,
// search, delete; a hostile HTML mail runs no script and fetches nothing until the reader
// asks for remote content. Screenshots go to docs/.
//   node inbox.mjs HTTP_URL SMTP_PORT COUNTER_URL DOCS_DIR
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";
import { sendMail } from "./smtp.mjs";

const [base, smtpPort, counter, docs] = process.argv.slice(2);
const port = Number(smtpPort);
const results = {};
const step = (name) => { console.error("step: " + name); };

function multipart(subject, to) {
  return [
    "From: Shop <shop@example.com>", `To: ${to}`, `Subject: ${subject}`, "MIME-Version: 1.0",
    "Content-Type: multipart/mixed; boundary=outer", "",
    "--outer", "Content-Type: multipart/alternative; boundary=alt", "",
    "--alt", "Content-Type: text/plain; charset=utf-8", "", "Hello plain text, your code is 4711.", "",
    "--alt", "Content-Type: text/html; charset=utf-8", "", "<h1>Hello HTML</h1><p>Your code is <b>4711</b>.</p>", "",
    "--alt--", "",
    "--outer", "Content-Type: text/csv; name=invoice.csv", "Content-Disposition: attachment; filename=invoice.csv", "", "item,price", "tea,3", "",
    "--outer--", "",
  ].join("\n");
}

function hostile(to) {
  const c = counter;
  return [
    "From: Evil <evil@example.com>", `To: ${to}`, "Subject: hostile html", "MIME-Version: 1.0",
    "Content-Type: text/html; charset=utf-8", "",
    `<html><head><meta http-equiv="refresh" content="0;url=${c}/refresh"><link rel="stylesheet" href="${c}/style.css"></head>`,
    `<body><script>window.parent.__pwned = 1; fetch("${c}/script");</script>`,
    `<img src="x" onerror="fetch('${c}/onerror')">`,
    `<img src="${c}/remote.png" alt="remote">`,
    `<div style="background:url(${c}/bg.png)">styled</div>`,
    `<iframe src="${c}/frame"></iframe>`,
    `<p>hostile body text</p></body></html>`,
  ].join("\n");
}

// playwright-core gives each launch a fresh user data directory of its own.
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync"],
});
try {
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const address = "web@example.org";

  step("empty inbox");
  await page.goto(`${base}/inbox/${address}`);
  await page.waitForSelector("#empty:not([hidden])", { timeout: 15000 });
  await page.waitForSelector("#live.on", { timeout: 15000 });

  step("mail appears live");
  await sendMail(port, "shop@example.com", [address], multipart("Welcome aboard", address));
  await sendMail(port, "shop@example.com", [address], multipart("Your receipt", address).replace(/invoice\.csv/g, "receipt.csv"));
  await page.waitForSelector('#list li:has-text("Welcome aboard")', { timeout: 20000 });
  await page.waitForSelector('#list li:has-text("Your receipt")', { timeout: 20000 });
  results.live = true;
  await page.screenshot({ path: path.join(docs, "inbox-list.png") });

  step("open and read");
  await page.click('#list li:has-text("Welcome aboard")');
  await page.waitForSelector('#m-subject:has-text("Welcome aboard")');
  const frame = page.frameLocator("#m-html");
  await frame.locator("h1").waitFor({ timeout: 15000 });
  results.html = await frame.locator("h1").textContent();
  await page.screenshot({ path: path.join(docs, "inbox-message.png") });
  await page.click('.tabs button[data-tab="text"]');
  results.text = await page.textContent("#tab-text");
  await page.click('.tabs button[data-tab="envelope"]');
  results.envelope = JSON.parse(await page.textContent("#tab-envelope"));

  step("download the attachment");
  const [download] = await Promise.all([page.waitForEvent("download"), page.click('#m-attachments a:has-text("invoice.csv")')]);
  const file = await download.path();
  results.attachment = fs.readFileSync(file, "utf8");
  results.attachmentName = download.suggestedFilename();

  step("search");
  await page.fill("#search", "subject:receipt");
  await page.press("#search", "Enter");
  await page.waitForFunction(() => document.querySelectorAll("#list li").length === 1 && document.querySelector("#list li").textContent.includes("Your receipt"), null, { timeout: 15000 });
  await page.fill("#search", "nothing-matches-this");
  await page.press("#search", "Enter");
  await page.waitForSelector("#empty:not([hidden])", { timeout: 15000 });
  results.search = true;

  step("delete with the keyboard");
  await page.fill("#search", "");
  await page.press("#search", "Enter");
  await page.waitForFunction(() => document.querySelectorAll("#list li").length === 2, null, { timeout: 15000 });
  await page.click('#list li:has-text("Your receipt")');
  await page.waitForSelector('#m-subject:has-text("Your receipt")');
  await page.locator("body").press("Delete");
  await page.waitForFunction(() => document.querySelectorAll("#list li").length === 1, null, { timeout: 15000 });
  results.deleted = true;

  step("a hostile mail");
  await sendMail(port, "evil@example.com", [address], hostile(address));
  await page.waitForSelector('#list li:has-text("hostile html")', { timeout: 20000 });
  await page.click('#list li:has-text("hostile html")');
  await frame.locator("p").waitFor({ timeout: 15000 });
  await page.waitForTimeout(2500);
  results.hostileText = await frame.locator("p").textContent();
  results.pwned = await page.evaluate(() => window.__pwned === 1);
  results.frameSandbox = await page.getAttribute("#m-html", "sandbox");
  // The test's counter is read by the caller now, then the reader allows remote content.
  console.log(JSON.stringify({ phase: "blocked", results }));
  await new Promise((resolve) => process.stdin.once("data", resolve));
  await page.click("#load-remote");
  await page.waitForTimeout(2500);
  results.pwnedAfterRemote = await page.evaluate(() => window.__pwned === 1);

  step("phone");
  const phone = await browser.newContext({ viewport: { width: 390, height: 780 }, isMobile: true });
  const small = await phone.newPage();
  await small.goto(`${base}/inbox/${address}`);
  await small.waitForSelector('#list li:has-text("Welcome aboard")', { timeout: 15000 });
  await small.screenshot({ path: path.join(docs, "inbox-phone.png") });
  await phone.close();

  results.errors = errors;
  console.log(JSON.stringify({ phase: "done", results }));
} finally {
  await browser.close();
}
