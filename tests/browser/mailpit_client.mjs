// The mailpit-api npm client, unchanged, against Samotop's API.
//   node mailpit_client.mjs HTTP_URL SMTP_PORT
import { MailpitClient } from "mailpit-api";
import { sendMail } from "./smtp.mjs";

const [base, smtpPort] = process.argv.slice(2);
const mailpit = new MailpitClient(base);
const out = {};

out.info = await mailpit.getInfo();
await mailpit.deleteMessages();
const body = ["From: App <app@example.com>", "To: user@example.org", "Subject: Welcome via mailpit-api", "MIME-Version: 1.0",
  "Content-Type: multipart/mixed; boundary=b", "", "--b", "Content-Type: text/plain", "", "Your code is 2024.", "",
  "--b", "Content-Type: text/plain; name=a.txt", "Content-Disposition: attachment; filename=a.txt", "", "attached", "", "--b--", ""].join("\n");
const waiting = mailpit.waitForMessage({ query: "subject:Welcome" }, { timeout: 15000, interval: 200 });
await sendMail(Number(smtpPort), "app@example.com", ["user@example.org"], body);
await sendMail(Number(smtpPort), "other@example.com", ["someone@example.org"], "Subject: second\n\nsecond body");
const waited = await waiting;
out.waited = { Subject: waited.Subject, Text: waited.Text, Attachments: waited.Attachments.length };
const counted = await mailpit.waitForMessages({ count: 2 }, { timeout: 15000, interval: 200 });
out.list = await mailpit.listMessages();
out.messages_count = counted.messages_count;
out.search = await mailpit.searchMessages({ query: "from:app@example.com" });
out.summary = await mailpit.getMessageSummary();
out.headers = await mailpit.getMessageHeaders(waited.ID);
out.source = await mailpit.getMessageSource(waited.ID);
const blob = await mailpit.getMessageAttachment(waited.ID, waited.Attachments[0].PartID);
out.attachment = await blob.text();
out.text = await mailpit.renderMessageText(waited.ID);
await mailpit.setReadStatus({ IDs: [waited.ID], Read: false });
out.unreadAfterSet = (await mailpit.searchMessages({ query: "is:unread" })).messages_count;
await mailpit.setReadStatus({ Read: true });
out.unreadAfterAll = (await mailpit.listMessages()).unread;
await mailpit.deleteMessagesBySearch({ query: "subject:second" });
out.afterDeleteSearch = (await mailpit.listMessages()).total;
await mailpit.deleteMessages({ IDs: [waited.ID] });
out.afterDelete = (await mailpit.listMessages()).total;
out.tags = await mailpit.getTags();
console.log(JSON.stringify(out));
