"""The deployment files of deploy/ are valid and agree with the daemon (issue 17, docs/cluster.md).

- deploy/haproxy.cfg passes `haproxy -c`; deploy/nginx.conf passes `nginx -t` inside a
  minimal main configuration whose paths are all in a temporary folder.
- deploy/k8s/*.yaml parse (python3-yaml) into the expected objects: the rnnd StatefulSet with
  its conf, headless Service and Service; HAProxy's ConfigMap, Deployment and Service; Redis's
  StatefulSet and Service.
- They agree with rnnd: the conf in the ConfigMap, with the pod's arguments as Kubernetes
  expands them ($(POD_NAME): rnnd-0), is accepted by `rnnd serve --print-config` (a
  temporary password file of the Secret's mode in place of the Secret's) and runs cluster
  mode: session_store names the Redis Service, the password file is the Secret's key that
  Redis reads, node_name is the pod's name, and terminationGracePeriodSeconds exceeds the
  drain's grace plus shutdown_timeout_s. Its listen port is the container port, the probes'
  port and the Services' targets; the readiness and liveness probes are /readyz and
  /healthz, and a real daemon with API keys on answers both with 200 without a key.
- HAProxy (deploy/haproxy.cfg and the ConfigMap's copy alike) checks /readyz, caps the idle
  connections of every backend (pool-max-conn) and keeps its backends' maxconn and
  pool-max-conn together below rnnd's max_connections_per_ip (docs/cluster.md gives each
  and their sum), gives the servers of its consistent-hash backends weight 100, and
  the ConfigMap names exactly the StatefulSet's pods on rnnd's port.
- The ConfigMap's haproxy.cfg is deploy/haproxy.cfg but for its servers and a resolvers
  section (it passes `haproxy -c` too); Redis keeps an append-only file; the password comes
  from one Secret that no manifest ships.
- nginx: each upstream has a shared zone and max_conns on every server, and max_conns plus
  keepalive times the worker processes the file is sized for stay below
  max_connections_per_ip; nginx run with the file in front of nodes that are down answers
  a session's requests 502 and none of its logs (error logs included) holds the id.

Env: RNND_BIN, RNND_SRCDIR. Prints what it checked; each part is a test (Deploy.test_*).
"""
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import unittest
import urllib.request

import yaml

from daemon_util import RNND_BIN, Case, Daemon, tmpdir
from daemon_util import RUNNING as C
SRCDIR = os.environ["RNND_SRCDIR"]
DEPLOY = os.path.join(SRCDIR, "deploy")
MODEL = os.path.join(SRCDIR, "models", "charlm.rnnd")


def read(*parts):
    with open(os.path.join(DEPLOY, *parts), encoding="utf-8") as f:
        return f.read()


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)


def print_config(*args):
    p = run([RNND_BIN, "serve"] + list(args) + ["--print-config"])
    return p.returncode, dict(l.split(" = ", 1) for l in p.stdout.splitlines() if " = " in l), \
        p.stderr


def haproxy_check(path, what):
    p = run(["haproxy", "-c", "-f", path])
    C.check(p.returncode == 0, "%s passes haproxy -c: %s" % (what, (p.stdout + p.stderr)[-500:]))


def backends(cfg):
    """{backend name: [lines]} of a HAProxy configuration (comments and blanks left out)."""
    out, cur = {}, None
    for line in cfg.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        m = re.match(r"(backend|frontend|global|defaults|resolvers|peers)\b\s*(\S*)", line)
        if m:
            cur = out.setdefault(m.group(2) or m.group(1), []) if m.group(1) == "backend" \
                else None
            continue
        if cur is not None:
            cur.append(s)
    return out


def any_servers(be):
    """[[name, address]] of the rnnd_any backend in BE (backends())."""
    return [l.split()[1:3] for l in be.get("rnnd_any", []) if l.startswith("server ")]


def haproxy_caps(cfg, key="maxconn"):
    """{backend: its servers' KEY (maxconn, pool-max-conn)} of a HAProxy configuration."""
    be = backends(cfg)
    k = re.escape(key)
    base = re.search(r"^defaults\b(?:\n(?!\S).*)*?\n\s*default-server .*\b%s (-?\d+)" % k,
                     cfg, re.M)
    caps = {name: int(base.group(1)) for name in be} if base else {}
    for name, lines in be.items():
        for l in lines:
            m = re.match(r"(default-server|server) .*\b%s (-?\d+)" % k, l)
            if m:
                caps[name] = max(caps.get(name, 0), int(m.group(2)))
    return caps


def check_haproxy(cfg, what, defaults):
    """CFG (the text of WHAT): the routing, the caps, the log and the ring's weights."""
    be = backends(cfg)
    C.eq(sorted(be), ["rnnd_any", "rnnd_sequences", "rnnd_sessions"], "%s's backends" % what)
    C.check("balance leastconn" in be.get("rnnd_any", []), "creation and the rest: leastconn")
    C.check("balance hash path,field(4,/)" in be.get("rnnd_sessions", []) and
            "hash-type consistent" in be.get("rnnd_sessions", []),
            "sessions: consistent hash on the id, field 4 of /v1/sessions/ID/...")
    C.check(re.search(r"http-check send meth GET uri /readyz\b", cfg) is not None,
            "HAProxy checks /readyz")
    C.check(re.search(r"path_reg \^/v1/sessions/\[0-9a-f\]\{32\}\(/\|\$\)", cfg) is not None,
            "the session path is matched as rnnd's ids are written (32 lowercase hex)")
    # every node is a server of each backend, and HAProxy's connections all come from one
    # address: their maxconn together (plus the health check's connection) stay below the
    # node's max_connections_per_ip, or a burst closes the checks too and every node goes
    # DOWN (outside trial 22, S2-a: 3 x 100 against 128)
    per_ip = int(defaults.get("max_connections_per_ip", "0"))
    caps = haproxy_caps(cfg)
    C.eq(sorted(caps), sorted(be), "every backend caps its servers' connections (maxconn)")
    # maxconn counts only the connections serving a request: HAProxy keeps idle ones
    # besides, unbounded unless pool-max-conn caps them (and opens a new one for the first
    # request of each client connection, so clients sending "Connection: close" filled the
    # pools: 114 connections to one node and 485 x 502 with 60 + 60 clients, trial 24 N1)
    pools = haproxy_caps(cfg, "pool-max-conn")
    C.eq(sorted(pools), sorted(be),
         "every backend caps its servers' idle connections (pool-max-conn)")
    C.check(all(v >= 0 for v in pools.values()), "no pool-max-conn is -1 (unlimited)")
    total = sum(caps.values()) + sum(max(v, 0) for v in pools.values())
    C.check(0 < total + 1 <= per_ip,
            "the backends' maxconn (%s) and pool-max-conn (%s) together (%d) + the check "
            "stay within rnnd's max_connections_per_ip (%d)" % (caps, pools, total, per_ip))
    C.check(not re.search(r"^\s*(option httplog|log-format .*%(HU|r|HP|HPO|HQ)\b)", cfg, re.M),
            "HAProxy's log leaves out the path (session ids)")
    servers = any_servers(be)
    for name in ("rnnd_sessions", "rnnd_sequences"):
        tracked = [l.split()[1:3] for l in be.get(name, []) if l.startswith("server ")]
        C.eq(tracked, servers, "%s has rnnd_any's servers" % name)
        C.check(all(("track rnnd_any/%s" % s[0]) in l for s, l in zip(
            tracked, [l for l in be.get(name, []) if l.startswith("server ")])),
            "%s's servers track rnnd_any's checks" % name)
    # a consistent-hash ring with weight 1 has 16 points per server: uneven shares, and a
    # 4th node took a third of the sessions (docs/cluster.md, acceptance 4; outside trial 22)
    for name, lines in be.items():
        if "hash-type consistent" not in lines:
            continue
        srv = [l for l in lines if l.startswith("server ")]
        C.check(srv and all(re.search(r"\sweight 100\b", l) for l in srv),
                "%s: %s's servers have weight 100 on the ring" % (what, name))


def check_cluster_doc_caps(cfg):
    """docs/cluster.md names deploy/haproxy.cfg's maxconn per backend, and their sum."""
    with open(os.path.join(SRCDIR, "docs", "cluster.md"), encoding="utf-8") as f:
        doc = f.read()
    routing = re.search(r"^## Routing.*?(?=^## )", doc, re.M | re.S)
    C.check(routing is not None, "docs/cluster.md has a Routing section")
    text = re.sub(r"\s+", " ", routing.group(0)) if routing else ""
    caps = haproxy_caps(cfg)
    said = [int(n) for n in re.findall(r"`maxconn (\d+)`", text)]
    C.eq(sorted(said), sorted(caps.values()),
         "docs/cluster.md gives each backend's maxconn (%s)" % caps)
    pools = haproxy_caps(cfg, "pool-max-conn")
    said = [int(n) for n in re.findall(r"`pool-max-conn (\d+)`", text)]
    C.eq(sorted(said), sorted(pools.values()),
         "docs/cluster.md gives each backend's pool-max-conn (%s)" % pools)
    total = sum(caps.values()) + sum(pools.values())
    C.check(("%d connections" % total) in text,
            "docs/cluster.md gives their sum, idle ones included (%d connections)" % total)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx_main(tmp, conf):
    """Write CONF as TMP/rnnd.conf inside a minimal main configuration whose paths are all
    in TMP (its own error log at nginx's default level, error); return the main's path."""
    with open(os.path.join(tmp, "rnnd.conf"), "w") as f:
        f.write(conf)
    paths = " ".join("%s_temp_path %s/%s;" % (k, tmp, k)
                     for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main = os.path.join(tmp, "main.conf")
    with open(main, "w") as f:
        f.write("pid %s/nginx.pid;\nerror_log %s/error.log;\nevents {}\n"
                "http {\n  %s\n  include %s/rnnd.conf;\n}\n" % (tmp, tmp, paths, tmp))
    return main


def check_nginx_logs(src):
    """nginx with deploy/nginx.conf in front of nodes that are down: a session's request gets
    502, and no log file, the error logs included, holds its id (outside trial 22: nginx's
    error log named the request line at every upstream failure)."""
    tmp = tempfile.mkdtemp(prefix="rnnd-nginx-run-", dir=tmpdir("deploy"))
    proc = None
    try:
        port = free_port()
        conf = src.replace("/var/log/nginx/", tmp + "/")
        conf = re.sub(r"^(\s*listen )8080;", r"\g<1>127.0.0.1:%d;" % port, conf, flags=re.M)
        # the nodes' ports, closed: every connection to a node fails
        for old in sorted(set(re.findall(r"\bserver (\S+:\d+)", conf))):
            conf = conf.replace(old, "127.0.0.1:%d" % free_port())
        main = nginx_main(tmp, conf)
        proc = subprocess.Popen(["nginx", "-p", tmp, "-c", main, "-g", "daemon off;"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        sid = "5e55" + "0123456789abcdef" * 1 + "fedcba9876ab"
        C.eq(len(sid), 32, "a session id of 32 hex digits")
        for method, path in (("POST", "/v1/sessions/%s/step" % sid),
                             ("GET", "/v1/sessions/%s" % sid)):
            req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method,
                                         data=b"{}" if method == "POST" else None)
            try:
                urllib.request.urlopen(req, timeout=10)
                status = 200
            except urllib.error.HTTPError as e:
                status = e.code
            C.eq(status, 502, "nginx, nodes down: %s %s answers 502" % (method, path[:12]))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
    try:
        logs = {}
        for name in sorted(os.listdir(tmp)):
            if name.endswith(".log"):
                with open(os.path.join(tmp, name), encoding="utf-8", errors="replace") as f:
                    logs[name] = f.read()
        C.check("rnnd.log" in logs and logs["rnnd.log"].count(" 502 ") == 2,
                "nginx's access log has both requests: %r" % logs.get("rnnd.log", "")[-300:])
        for name, text in logs.items():
            C.check(sid not in text, "nginx's %s holds no session id: %r"
                    % (name, [l for l in text.splitlines() if sid in l][:1]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_nginx_caps(src, per_ip):
    """Both upstreams' connections to one node, idle ones included, stay below rnnd's
    max_connections_per_ip: max_conns (active, counted across workers in a shared zone) plus
    keepalive (idle, per worker process) times the workers the file is sized for."""
    ups = re.findall(r"upstream (\w+) \{(.*?)\}", src, re.S)
    active = idle = 0
    for name, body in ups:
        C.check(re.search(r"^\s*zone %s \d+k;" % name, body, re.M) is not None,
                "nginx's %s has a shared zone (max_conns counts over the workers)" % name)
        caps = [int(n) for n in re.findall(r"^\s*server \S+ .*\bmax_conns=(\d+)", body, re.M)]
        servers = re.findall(r"^\s*server ", body, re.M)
        C.check(caps and len(caps) == len(servers) and len(set(caps)) == 1,
                "nginx's %s caps each server alike (max_conns): %s" % (name, caps))
        keep = re.search(r"^\s*keepalive (\d+);", body, re.M)
        C.check(keep is not None, "nginx's %s keeps idle connections (keepalive)" % name)
        active += caps[0] if caps else 0
        idle += int(keep.group(1)) if keep else 0
    workers = re.search(r"up to (\d+) worker processes", src)
    C.check(workers is not None, "nginx.conf says how many worker processes it is sized for")
    n = int(workers.group(1)) if workers else 0
    total = active + n * idle
    C.check(0 < total < per_ip, "nginx: max_conns %d + %d workers x keepalive %d = %d, below "
            "rnnd's max_connections_per_ip (%d)" % (active, n, idle, total, per_ip))
    C.check(("%d + %d x (" % (active, n)) in re.sub(r"\s+", " ", src) and
            ("= %d." % total) in re.sub(r"\s+", " ", src),
            "nginx.conf's comment gives the sum (%d + %d x ... = %d)" % (active, n, total))


def check_nginx(haproxy_servers, defaults):
    tmp = tempfile.mkdtemp(prefix="rnnd-nginx-", dir=tmpdir("deploy"))
    try:
        conf = read("nginx.conf").replace("/var/log/nginx/", tmp + "/")
        C.check(conf != read("nginx.conf"), "nginx.conf logs to a file (moved for the test)")
        main = nginx_main(tmp, conf)
        p = run(["nginx", "-t", "-p", tmp, "-c", main])
        C.check(p.returncode == 0, "deploy/nginx.conf passes nginx -t: %s"
                % (p.stdout + p.stderr)[-500:])
        src = read("nginx.conf")
        C.check(re.search(r"hash \$rnnd_session consistent;", src) is not None,
                "nginx: consistent hash on the session id")
        C.check("least_conn;" in src, "nginx: the rest by least connections")
        C.check("$request " not in src and "$request_uri" not in src and
                re.search(r"log_format \w+ [^;]*\$uri", src) is None,
                "nginx's log leaves out the path")
        ups = re.findall(r"upstream (\w+) \{(.*?)\}", src, re.S)
        C.eq(sorted(u for u, _ in ups), ["rnnd_any", "rnnd_sessions"], "nginx's upstreams")
        for name, body in ups:
            addrs = re.findall(r"^\s*server (\S+)", body, re.M)
            C.eq(addrs, [s[1] for s in haproxy_servers],
                 "nginx's %s has deploy/haproxy.cfg's servers" % name)
        check_nginx_caps(src, int(defaults.get("max_connections_per_ip", "0")))
        check_nginx_logs(src)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def k8s_objects():
    objs = {}
    folder = os.path.join(DEPLOY, "k8s")
    files = sorted(f for f in os.listdir(folder) if f.endswith(".yaml"))
    C.eq(files, ["haproxy.yaml", "redis.yaml", "rnnd.yaml"], "deploy/k8s's files")
    for name in files:
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if doc is None:
                    continue
                key = (doc["kind"], doc["metadata"]["name"])
                C.check(key not in objs, "%s/%s is defined once" % key)
                objs[key] = doc
    return objs


def container(obj):
    cs = obj["spec"]["template"]["spec"]["containers"]
    C.eq(len(cs), 1, "%s has one container" % obj["metadata"]["name"])
    return cs[0]


def named_port(c, name):
    return {p["name"]: p["containerPort"] for p in c.get("ports", [])}.get(name)


def check_k8s(haproxy_cfg, defaults):
    objs = k8s_objects()
    want = [("Namespace", "rnnd"), ("ConfigMap", "rnnd-conf"), ("StatefulSet", "rnnd"),
            ("Service", "rnnd-headless"), ("Service", "rnnd"), ("ConfigMap", "haproxy-cfg"),
            ("Deployment", "haproxy"), ("Service", "rnnd-lb"), ("StatefulSet", "redis"),
            ("Service", "redis")]
    C.eq(sorted(objs), sorted(want), "deploy/k8s's objects")
    if sorted(objs) != sorted(want):
        return
    for key, obj in objs.items():
        if key[0] != "Namespace":
            C.eq(obj["metadata"].get("namespace"), "rnnd", "%s/%s's namespace" % key)
    C.check(not any(k[0] == "Secret" for k in objs), "no password is shipped (no Secret)")

    # rnnd: its conf is accepted, and ports and probes agree with it
    conf = objs[("ConfigMap", "rnnd-conf")]["data"]["rnnd.conf"]
    tmp = tmpdir("deploy")
    # the password file is the Secret's, mounted in the pod: here a file of the Secret's mode
    # (0440) in its place, as the daemon's start would check it (tests/test_store_settings.py)
    m = re.search(r"^session_store_password_file = (\S+)$", conf, re.M)
    pw = m.group(1) if m else ""
    secret = os.path.join(tmp, "k8s-password")
    with open(secret, "w") as f:
        f.write("k8s-secret-password\n")
    os.chmod(secret, 0o440)
    conf_path = os.path.join(tmp, "k8s-rnnd.conf")
    with open(conf_path, "w") as f:
        f.write(conf.replace(" = " + pw + "\n", " = " + secret + "\n") if pw else conf)
    sts = objs[("StatefulSet", "rnnd")]
    c = container(sts)
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    # the pod's command line as Kubernetes runs it: $(VAR) expanded from the container's env
    # (metadata.name: the pod's name, rnnd-0 for the first)
    env = {e["name"]: "rnnd-0" for e in c.get("env", [])
           if e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name"}
    args = [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a)
            for a in c["args"]]
    C.eq(args[:3], ["serve", "--config", "/etc/rnnd/rnnd.conf"], "rnnd's command line")
    C.eq(mounts.get("conf"), "/etc/rnnd", "the conf is mounted where --config reads it")
    rc, eff, err = print_config("--config", conf_path, *args[3:])
    C.check(rc == 0, "the k8s rnnd.conf and arguments are accepted by rnnd serve "
            "--print-config: %s" % err)
    port = int(eff.get("listen", ":0").rsplit(":", 1)[1])
    C.check(eff.get("listen", "").startswith("0.0.0.0:"), "the pod listens on every address")
    # cluster mode (outside trial 22: the settings were commented out, "refused until the
    # session store is built", long after it was)
    C.eq(eff.get("node_name"), "rnnd-0", "each pod's node name is its own name (POD_NAME)")
    redis_svc = objs[("Service", "redis")]["spec"]
    C.eq(eff.get("session_store"), "redis://redis.rnnd.svc.cluster.local:%d/0"
         % redis_svc["ports"][0]["port"], "session_store is on and names the Redis Service")
    C.eq(eff.get("session_store_password_file"), secret if pw else "",
         "the conf names a session_store_password_file")
    C.check(os.path.dirname(pw) == mounts.get("redis-password"),
            "the password file (%s) is in the Secret's mount" % pw)
    rs_cmd = " ".join(container(objs[("StatefulSet", "redis")]).get("args", []))
    C.check(("/%s)" % os.path.basename(pw)) in rs_cmd,
            "rnnd reads the Secret's key that Redis reads (%s)" % os.path.basename(pw))
    grace = sts["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    C.check(grace * 1000 > int(eff.get("drain_grace_ms", "0")) +
            1000 * int(eff.get("shutdown_timeout_s", "0")),
            "terminationGracePeriodSeconds (%d s) leaves room for the drain's grace and "
            "shutdown_timeout_s" % grace)
    C.eq(named_port(c, "http"), port, "rnnd's containerPort is its listen port")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = c.get(probe, {}).get("httpGet", {})
        C.eq(get.get("path"), path, "rnnd's %s path" % probe)
        C.check(get.get("port") in ("http", port), "rnnd's %s port" % probe)
    for svc in ("rnnd-headless", "rnnd"):
        s = objs[("Service", svc)]["spec"]
        C.eq(s["selector"], sts["spec"]["selector"]["matchLabels"], "%s selects rnnd" % svc)
        C.eq([(p["port"], p["targetPort"]) for p in s["ports"]], [(port, "http")],
             "%s's port" % svc)
    C.eq(objs[("Service", "rnnd-headless")]["spec"].get("clusterIP"), "None",
         "rnnd-headless is headless")
    C.eq(sts["spec"]["serviceName"], "rnnd-headless", "the StatefulSet's DNS names")

    # HAProxy: the ConfigMap is deploy/haproxy.cfg with the pods as servers
    cm = objs[("ConfigMap", "haproxy-cfg")]["data"]["haproxy.cfg"]
    cm_path = os.path.join(tmp, "k8s-haproxy.cfg")
    with open(cm_path, "w") as f:
        f.write(cm)
    haproxy_check(cm_path, "the k8s haproxy.cfg")
    check_haproxy(cm, "the k8s haproxy.cfg", defaults)

    def skeleton(cfg):
        out, skip = [], False
        for line in cfg.splitlines():
            if line.startswith("resolvers "):
                skip = True
            elif line and not line[0].isspace():
                skip = False
            if not skip and not line.strip().startswith("server "):
                out.append(line.rstrip())
        return [l for l in out if l.strip() and not l.strip().startswith("#")]
    C.eq(skeleton(cm), skeleton(haproxy_cfg), "the k8s haproxy.cfg is deploy/haproxy.cfg "
         "but for its servers")
    replicas = sts["spec"]["replicas"]
    pods = ["rnnd-%d" % i for i in range(replicas)]
    for name, lines in backends(cm).items():
        srv = [l.split() for l in lines if l.startswith("server ")]
        C.eq([s[1] for s in srv], pods, "HAProxy's %s names the StatefulSet's pods" % name)
        C.eq([s[2] for s in srv],
             ["%s.rnnd-headless.rnnd.svc.cluster.local:%d" % (p, port) for p in pods],
             "HAProxy's %s reaches them by their stable names on rnnd's port" % name)
    hc = container(objs[("Deployment", "haproxy")])
    bind = re.search(r"^\s*bind :(\d+)$", cm, re.M)
    C.check(bind is not None and named_port(hc, "http") == int(bind.group(1)),
            "HAProxy's containerPort is its bind port")
    C.check(any(m["mountPath"] + "/haproxy.cfg" in hc["args"] for m in hc["volumeMounts"]),
            "HAProxy reads the ConfigMap")
    lb = objs[("Service", "rnnd-lb")]["spec"]
    C.eq(lb["selector"], objs[("Deployment", "haproxy")]["spec"]["selector"]["matchLabels"],
         "rnnd-lb selects HAProxy")

    # Redis: append-only, the Secret shared with rnnd
    rs = objs[("StatefulSet", "redis")]
    rc_ = container(rs)
    cmd = " ".join(rc_.get("command", []) + rc_.get("args", []))
    C.check("--appendonly yes" in cmd, "Redis keeps an append-only file")
    C.check("requirepass" in cmd and "--requirepass" not in cmd,
            "Redis's password comes from a file, not its command line")
    C.eq(named_port(rc_, "redis"), redis_svc["ports"][0]["port"], "Redis's port")

    def secrets(obj):
        return {v["secret"]["secretName"] for v in obj["spec"]["template"]["spec"]["volumes"]
                if "secret" in v}
    C.check(secrets(sts) == secrets(rs) == {"rnnd-redis"}, "one Secret holds the password")


def check_probes_open():
    """The probes need no key: a daemon with API keys answers /readyz and /healthz."""
    tmp = tmpdir("deploy")
    keys = os.path.join(tmp, "keys")
    with open(keys, "w") as f:
        f.write("k7V2vq0pXbqL3m9Zr8Y4eT1wQ6s probe admin\n")
    os.chmod(keys, 0o600)
    with Daemon({"charlm": MODEL}, "--api-keys-file", keys) as d:
        for path in ("/readyz", "/healthz"):
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d%s" % (d.port, path),
                                            timeout=10) as r:
                    status = r.status
            except urllib.error.HTTPError as e:
                status = e.code
            C.eq(status, 200, "%s answers 200 without a key" % path)
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/v1/models" % d.port, timeout=10)
            status = 200
        except urllib.error.HTTPError as e:
            status = e.code
        C.eq(status, 401, "while other routes need one (the check can fail)")


class Deploy(Case):
    """deploy/'s files, read once; the daemon's defaults from `rnnd serve --print-config`."""

    @classmethod
    def setUpClass(cls):
        for tool in ("haproxy", "nginx"):
            C.check(shutil.which(tool) or os.path.exists("/usr/sbin/" + tool),
                    "%s is installed (tools/setup)" % tool)
        os.environ["PATH"] += ":/usr/sbin"
        rc, cls.defaults, err = print_config()
        C.check(rc == 0, "rnnd serve --print-config: %s" % err)
        cls.cfg = read("haproxy.cfg")
        cls.servers = any_servers(backends(cls.cfg))

    def test_haproxy(self):
        haproxy_check(os.path.join(DEPLOY, "haproxy.cfg"), "deploy/haproxy.cfg")
        check_haproxy(self.cfg, "deploy/haproxy.cfg", self.defaults)
        check_cluster_doc_caps(self.cfg)

    def test_nginx(self):
        check_nginx(self.servers, self.defaults)

    def test_k8s(self):
        check_k8s(self.cfg, self.defaults)

    def test_probes_open(self):
        check_probes_open()


if __name__ == "__main__":
    unittest.main()
