// analytics-node, as a server app uses it: every call type, then flush. Prints each
// request body it sends (its http_request event), one JSON a line, for the test to
// compare with what reached Kafka.
import { Analytics } from "@segment/analytics-node";

const [host, writeKey] = process.argv.slice(2);
const analytics = new Analytics({ writeKey, host, flushAt: 20, flushInterval: 200 });
analytics.on("http_request", (request) => console.log(request.body));
analytics.on("error", (error) => { console.error(String(error)); process.exitCode = 1; });
const context = { app: { name: "node-test", version: "1.2.3" }, ip: "198.51.100.7" };
analytics.track({ userId: "u1", event: "Signed Up", properties: { plan: "Pro" },
  integrations: { Mixpanel: false }, context, timestamp: new Date("2026-12-01T10:00:00Z") });
analytics.identify({ userId: "u1", traits: { email: "a@example.com" }, context });
analytics.page({ userId: "u1", name: "Docs", category: "Guides", properties: { path: "/docs" } });
analytics.screen({ anonymousId: "anon-9", name: "Home", properties: { tab: 1 } });
analytics.group({ userId: "u1", groupId: "g-9", traits: { name: "ACME" } });
analytics.alias({ userId: "u1", previousId: "anon-9" });
await analytics.closeAndFlush();
