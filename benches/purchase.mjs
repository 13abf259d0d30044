// Playwright's side of the purchase benchmark: the same steps as baton's
// shipped flow (scripts/product_page.rhai, checkout.rhai, clear_cart.rhai),
// one page per cycle, on the same shop and the same Chromium.
// Run by benches/purchase.sh; env: SHOP (URL), CYCLES, CHROMIUM.
import { chromium } from "playwright-core";

const base = process.env.SHOP;
const cycles = Number(process.env.CYCLES || 20);
// The pause between cycles (not timed); baton's cycles are 25-35 s apart.
const gap = Number(process.env.GAP_MS ?? 1000);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-component-update", "--disable-quic", "--disable-background-networking"],
});
const context = await browser.newContext();

async function emptyCart(page) {
  await page.goto(`${base}/cart`);
  await page.waitForSelector("#cart-page");
  let lines = await page.locator(".cart-line").count();
  // The basket binds its Remove buttons after load (as lib/shop.rhai
  // waits for with wait_idle) and removes lines by AJAX.
  if (lines > 0) await page.waitForLoadState("networkidle");
  while (lines > 0) {
    await page.click(".cart-line .remove");
    lines -= 1;
    await page.locator(".cart-line").nth(lines).waitFor({ state: "detached" });
  }
  if ((await page.locator("#cart-empty").count()) === 0) throw new Error("cart not empty");
}

const times = [];
for (let i = 0; i < cycles + 2; i++) {
  const t = performance.now();
  const page = await context.newPage();
  // product_page
  await emptyCart(page);
  await page.goto(`${base}/p/1001`);
  await page.waitForSelector("#add-to-cart, #out-of-stock");
  const price = parseFloat((await page.textContent("#price")).replace(/[^0-9.]/g, ""));
  if (price > 60) throw new Error("price too high");
  await page.fill("#qty", "1");
  await page.click("#add-to-cart");
  await page.waitForSelector("#cart-page");
  if ((await page.locator('.cart-line[data-product="1001"]').count()) === 0) throw new Error("not in cart");
  // checkout
  await page.goto(`${base}/cart`);
  await page.waitForSelector("#cart-page");
  if ((await page.locator(".cart-line").count()) !== 1) throw new Error("cart has other lines");
  await page.click("#checkout");
  await page.waitForSelector("#address-form");
  await page.fill("#name", "Ada Lovelace");
  await page.fill("#email", "ada@example.com");
  await page.fill("#address", "12 Analytical Way");
  await page.click("#to-payment");
  await page.waitForSelector("#payment-page");
  const card = page.frameLocator("#card-frame");
  await card.locator("#card-number").fill("4242424242424242");
  await card.locator("#card-cvv").fill("123");
  await page.click("#to-review");
  await page.waitForSelector("#review-page");
  await page.click("#place-order");
  await page.waitForSelector("#order-number, #error");
  const order = await page.textContent("#order-number");
  if (!order || !order.startsWith("A-")) throw new Error("no order");
  // clear_cart
  await emptyCart(page);
  await page.close();
  if (i >= 2) times.push(performance.now() - t);
  await new Promise((r) => setTimeout(r, gap));
}
await browser.close();
times.sort((a, b) => a - b);
const median = times[Math.floor(times.length / 2)];
const p90 = times[Math.floor((times.length * 9) / 10)];
console.log(`playwright purchase cycle: median ${median.toFixed(0)} ms, p90 ${p90.toFixed(0)} ms over ${times.length} cycles`);
console.log(`PLAYWRIGHT_CYCLE_MS=${median.toFixed(1)}`);
