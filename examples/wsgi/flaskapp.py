"""An existing Flask app, as it runs under gunicorn today; nothing in it knows about ASGI.

Pages rendered from templates, a form POST answered with a redirect (Post/Redirect/Get), a
JSON view of what the WSGI environ holds, and a CSV report streamed row by row from a
generator. The home page also holds a chat box whose WebSocket goes to ``/ws/chat/``: Flask
never sees it, the routing beside it (``routing.py``) hands it to a towpath consumer.

    gunicorn examples.wsgi.flaskapp:app            # WSGI alone (the split set-up, README.md)
    towpath runserver --routing examples.wsgi.routing:routes     # Flask and the chat together
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from flask import Flask, Response, redirect, render_template_string, request, url_for

app = Flask(__name__)

HOME = """<!doctype html>
<title>towpath + Flask</title>
<h1>Flask, served by towpath workers</h1>
{% if error %}<p class="error">{{ error }}</p>{% endif %}
<form method="post" action="{{ url_for('greet') }}">
  <label>Your name <input name="name" autofocus></label> <button>Greet me</button>
</form>
<p><a href="{{ url_for('report', rows=5) }}">A streamed CSV report</a></p>

<h2>Chat (a WebSocket beside the WSGI app)</h2>
<ul id="log"></ul>
<form id="chat"><input id="text" placeholder="say something"> <button>Send</button></form>
<script>
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const socket = new WebSocket(scheme + location.host + "/ws/chat/");
  socket.onmessage = (event) => {
    const {name, text} = JSON.parse(event.data);
    const item = document.createElement("li");
    item.textContent = name + ": " + text;
    document.getElementById("log").append(item);
  };
  document.getElementById("chat").onsubmit = (event) => {
    event.preventDefault();
    const input = document.getElementById("text");
    socket.send(JSON.stringify({name: "browser", text: input.value}));
    input.value = "";
  };
</script>
"""


@app.get("/")
def home() -> str:
    return render_template_string(HOME, error=None)


@app.post("/greet")
def greet() -> Response | tuple[str, int]:
    name = request.form.get("name", "").strip()
    if not name:
        return render_template_string(HOME, error="Please give a name."), 400
    return redirect(url_for("hello", name=name))


@app.get("/hello/<name>")
def hello(name: str) -> str:
    return render_template_string("<!doctype html><h1>Hello, {{ name }}!</h1>", name=name)


@app.get("/whoami")
def whoami() -> dict[str, object]:
    return {
        "method": request.method,
        "url": request.url,
        "remote_addr": request.remote_addr,
        "args": request.args.to_dict(),
        "user_agent": request.user_agent.string,
    }


@app.get("/report.csv")
def report() -> Response:
    rows = request.args.get("rows", 3, type=int)
    pause = request.args.get("pause", 0.0, type=float)

    def generate() -> Iterator[str]:
        # a slow query, a large export: each row goes out as soon as it is made
        yield "n,square\n"
        for n in range(1, rows + 1):
            time.sleep(pause)
            yield f"{n},{n * n}\n"

    return Response(generate(), mimetype="text/csv")
