// hsd's web console: SPICE through spice-html5, or the serial console
// through xterm.js, each over a WebSocket of this origin that hsd relays
// to the VM (the session cookie set with this page authorises it).
const kind = document.body.dataset.kind;
const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
const statusEl = document.getElementById('status');

function setStatus(s) {
	statusEl.textContent = s;
	document.body.dataset.state = s;
}

async function spice() {
	const SpiceHtml5 = await import('/spice-html5/main.js');
	let sc = null;
	sc = new SpiceHtml5.SpiceMainConn({
		uri: scheme + location.host + '/ws/spice',
		screen_id: 'spice-screen',
		dump_id: 'debug-div',
		message_id: 'message-div',
		password: '',
		onerror: (e) => {
			setStatus('closed');
			if (sc)
				sc.stop();
		},
		onsuccess: () => setStatus('connected'),
		onagent: (conn) => {
			window.addEventListener('resize', SpiceHtml5.handle_resize);
			SpiceHtml5.resize_helper(conn);
		},
	});
	window.spice_connection = sc;
}

async function serial() {
	const { Terminal } = await import('/assets/xterm.mjs');
	const term = new Terminal({ scrollback: 5000 });
	term.open(document.getElementById('terminal'));
	const ws = new WebSocket(scheme + location.host + '/ws/serial', 'binary');
	ws.binaryType = 'arraybuffer';
	ws.onopen = () => {
		setStatus('connected');
		term.focus();
	};
	ws.onmessage = (e) => term.write(new Uint8Array(e.data));
	ws.onclose = () => setStatus('closed');
	const enc = new TextEncoder();
	term.onData((d) => {
		if (ws.readyState === WebSocket.OPEN)
			ws.send(enc.encode(d));
	});
	window.hsTerm = term;
}

(kind === 'spice' ? spice() : serial()).catch((e) => setStatus('error: ' + e));
