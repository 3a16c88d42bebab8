"""A PEP 517 build backend in the standard library alone, for this folder's one pure-Python
package: `pip install clients/python` then needs no network and no setuptools (pip's build
isolation installs the backend's requirements, and there are none).

It reads [project] name and version and [tool.rnnd-build] packages from pyproject.toml and
writes a py3-none-any wheel (the packages' files, METADATA, WHEEL, RECORD) or an sdist.
"""
import base64
import hashlib
import io
import os
import tarfile
import tomllib
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_DIRS = {"__pycache__"}


def _project():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        cfg = tomllib.load(f)
    proj = cfg["project"]
    return proj, cfg.get("tool", {}).get("rnnd-build", {}).get("packages", [])


def _dist_name(name):
    return name.replace("-", "_")


def _files(packages):
    """(path relative to ROOT) of every file of PACKAGES, sorted."""
    out = []
    for pkg in packages:
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, pkg)):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
            for fn in sorted(filenames):
                if not fn.endswith((".pyc", ".pyo")):
                    out.append(os.path.relpath(os.path.join(dirpath, fn), ROOT))
    return out


def _metadata(proj):
    lines = ["Metadata-Version: 2.1", "Name: " + proj["name"], "Version: " + proj["version"]]
    if proj.get("description"):
        lines.append("Summary: " + proj["description"])
    if proj.get("requires-python"):
        lines.append("Requires-Python: " + proj["requires-python"])
    for dep in proj.get("dependencies", []):
        lines.append("Requires-Dist: " + dep)
    # extras (PEP 508 markers): `pip install 'clients/python[websocket]'`
    for extra, deps in sorted(proj.get("optional-dependencies", {}).items()):
        lines.append("Provides-Extra: " + extra)
        for dep in deps:
            lines.append('Requires-Dist: %s; extra == "%s"' % (dep, extra))
    return "\n".join(lines) + "\n"


def _record_line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "%s,sha256=%s,%d" % (path, digest, len(data))


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    proj, _ = _project()
    info = "%s-%s.dist-info" % (_dist_name(proj["name"]), proj["version"])
    os.makedirs(os.path.join(metadata_directory, info), exist_ok=True)
    with open(os.path.join(metadata_directory, info, "METADATA"), "w") as f:
        f.write(_metadata(proj))
    return info


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    proj, packages = _project()
    name, version = _dist_name(proj["name"]), proj["version"]
    info = "%s-%s.dist-info" % (name, version)
    wheel = "%s-%s-py3-none-any.whl" % (name, version)
    entries = []
    for rel in _files(packages):
        with open(os.path.join(ROOT, rel), "rb") as f:
            entries.append((rel.replace(os.sep, "/"), f.read()))
    entries.append((info + "/METADATA", _metadata(proj).encode()))
    entries.append((info + "/WHEEL", b"Wheel-Version: 1.0\nGenerator: rnnd_build\n"
                    b"Root-Is-Purelib: true\nTag: py3-none-any\n"))
    record = [_record_line(p, d) for p, d in entries] + [info + "/RECORD,,"]
    entries.append((info + "/RECORD", ("\n".join(record) + "\n").encode()))
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel), "w",
                         zipfile.ZIP_DEFLATED) as z:
        for path, data in entries:
            z.writestr(zipfile.ZipInfo(path, (1980, 1, 1, 0, 0, 0)), data)
    return wheel


def build_sdist(sdist_directory, config_settings=None):
    proj, packages = _project()
    base = "%s-%s" % (_dist_name(proj["name"]), proj["version"])
    files = ["pyproject.toml", os.path.join("_backend", "rnnd_build.py")] + _files(packages)
    out = base + ".tar.gz"
    with tarfile.open(os.path.join(sdist_directory, out), "w:gz") as t:
        for rel in files:
            t.add(os.path.join(ROOT, rel), arcname=base + "/" + rel.replace(os.sep, "/"))
        pkg_info = _metadata(proj).encode()
        ti = tarfile.TarInfo(base + "/PKG-INFO")
        ti.size = len(pkg_info)
        t.addfile(ti, io.BytesIO(pkg_info))
    return out
