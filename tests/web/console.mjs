// Drives hsd's web console in headless Chromium (playwright-core, the
// system's /usr/bin/chromium). Run by tests/integration/test_webconsole.py:
//   node console.mjs MODE URL SCREENSHOT [ARG]
// MODE denied: the page is a 403 with no screen.
// MODE serial: the terminal shows the guest's output; keys typed reach
//   the guest's shell (ARG: a command whose output is awaited).
// MODE spice:  the canvas gets non-uniform pixels that change while the
//   guest prints; keys typed reach the guest (its VGA console's shell).
// Prints one JSON line with what it saw; exits non-zero on failure.
import { createRequire } from 'module';

const require = createRequire(process.env.HS_WEB_DIR + '/node_modules/');
const { chromium } = require('playwright-core');
const [mode, url, shot, arg] = process.argv.slice(2);
const deadline = Date.now() + Number(process.env.HS_WEB_TIMEOUT || 60) * 1000;

async function waitFor(what, pred, interval = 200) {
	for (;;) {
		const v = await pred();
		if (v)
			return v;
		if (Date.now() > deadline)
			throw new Error('timed out waiting for ' + what);
		await new Promise((r) => setTimeout(r, interval));
	}
}

// A summary of the canvas: how many distinct colours among sampled pixels,
// and a hash of them (to see it change).
async function canvasState(page) {
	return page.evaluate(() => {
		const c = document.querySelector('#spice-screen canvas');
		if (!c || !c.width || !c.height)
			return null;
		const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
		const colours = new Set();
		let hash = 0;
		for (let i = 0; i < d.length; i += 4 * 97) {
			const v = (d[i] << 16) | (d[i + 1] << 8) | d[i + 2];
			colours.add(v);
			hash = (hash * 31 + v) | 0;
		}
		return { w: c.width, h: c.height, colours: colours.size, hash };
	});
}

const termText = (page) =>
	page.evaluate(() => {
		const t = window.hsTerm;
		if (!t)
			return '';
		const b = t.buffer.active;
		const lines = [];
		for (let i = 0; i < b.length; i++)
			lines.push(b.getLine(i).translateToString(true));
		return lines.join('\n');
	});

const browser = await chromium.launch({
	executablePath: '/usr/bin/chromium',
	args: ['--no-sandbox'],
});
const result = { mode };
try {
	const page = await browser.newPage({ viewport: { width: 1024, height: 768 } });
	const resp = await page.goto(url, { timeout: 30000 });
	result.status = resp.status();
	if (mode === 'denied') {
		result.canvas = (await page.locator('canvas').count()) > 0;
		result.text = await page.locator('body').innerText();
		await page.screenshot({ path: shot });
		if (result.status !== 403 || result.canvas)
			throw new Error('expected a 403 page with no screen');
	} else if (mode === 'serial') {
		await waitFor('the WebSocket', () =>
			page.evaluate(() => document.body.dataset.state === 'connected'));
		await page.click('#terminal');
		await page.keyboard.type(arg + '\n', { delay: 20 });
		const want = process.env.HS_WEB_EXPECT;
		result.text = await waitFor('"' + want + '" in the terminal', async () => {
			const t = await termText(page);
			return t.includes(want) ? t : null;
		});
		await page.screenshot({ path: shot });
	} else if (mode === 'spice') {
		const first = await waitFor('a non-uniform canvas', async () => {
			const s = await canvasState(page);
			return s && s.colours > 1 ? s : null;
		});
		result.first = first;
		result.changed = await waitFor('the canvas to change', async () => {
			const s = await canvasState(page);
			return s && s.hash !== first.hash ? s : null;
		});
		await page.screenshot({ path: shot });
		// Keys into the guest: the SPICE inputs channel takes them from
		// the focused screen, once spice-html5 has it open (it connects
		// after the display channel; keys before that are dropped).
		await waitFor('the SPICE inputs channel', () =>
			page.evaluate(() => {
				const sc = window.spice_connection;
				return !!(sc && sc.inputs && sc.inputs.state === 'ready');
			}));
		await page.click('#spice-screen canvas');
		await page.keyboard.type(arg + '\n', { delay: 50 });
		// The last key events leave through the WebSocket before the
		// browser closes.
		await page.waitForTimeout(1000);
		result.typed = true;
		await page.screenshot({ path: shot.replace(/\.png$/, '-typed.png') });
	} else {
		throw new Error('unknown mode ' + mode);
	}
	result.ok = true;
} catch (e) {
	result.ok = false;
	result.error = String(e);
} finally {
	await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
