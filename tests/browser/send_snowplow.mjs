// Snowplow's node tracker, as a server app uses it: a page view, a structured event with
// a context entity, a self-describing event with a true timestamp, a transaction and its
// item, then flush. Prints every event it sent (the parameters, as the emitter reports
// them), one JSON a line, for the test to compare with what reached Kafka.
import {
  newTracker, buildPageView, buildStructEvent, buildSelfDescribingEvent,
  buildEcommerceTransaction, buildEcommerceTransactionItem,
} from "@snowplow/node-tracker";

const [endpoint, eventMethod, anonymous] = process.argv.slice(2);
const tracker = newTracker({ namespace: "node-ns", appId: "node-app" }, {
  endpoint, eventMethod, bufferSize: eventMethod === "post" ? 5 : 1,
  serverAnonymization: anonymous === "anonymous",
  onRequestSuccess: (batch) => { for (const event of batch) console.log(JSON.stringify(event)); },
  onRequestFailure: (failure) => { console.error(JSON.stringify(failure)); process.exitCode = 1; },
});
tracker.setUserId("user-42");
tracker.setDomainUserId("duid-node");
tracker.setSessionId("sess-1");
tracker.setSessionIndex(3);
tracker.track(buildPageView({ pageUrl: "https://shop.example/a b?x=é", pageTitle: "Home é",
  referrer: "https://ref.example/" }));
tracker.track(buildStructEvent({ category: "shop", action: "add", label: "sku-1",
  property: "red", value: 1.5 }), [{ schema: "iglu:com.acme/ctx/jsonschema/1-0-0", data: { k: "v" } }]);
tracker.track(buildSelfDescribingEvent({ event: { schema: "iglu:com.acme/signup/jsonschema/1-0-0",
  data: { plan: "pro" } } }), undefined, { type: "ttm", value: 1764655200000 });
tracker.track(buildEcommerceTransaction({ orderId: "o-1", total: 10, currency: "EUR" }));
tracker.track(buildEcommerceTransactionItem({ orderId: "o-1", sku: "s-1", price: 5,
  quantity: 2, name: "Sock", currency: "EUR" }));
await tracker.flush();
