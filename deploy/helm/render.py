#!/usr/bin/env python3
"""Renders the modelgate chart without helm: the small part of Go templates the chart uses
(`.Values` / `.Release` / `.Chart` paths, if/else/end, define/include, and the functions
quote, default, toYaml, nindent, indent), then prints the manifests as one JSON list.

    render.py CHART_DIR [--set path.to.key=value ...] [--namespace NS] [--release NAME]

tests/e2e/helm.rs runs it to check the manifests against the binary (probes, ports, names).
Needs PyYAML (moto, installed by .ci/run, brings it).
"""
import json
import re
import sys
from pathlib import Path

import yaml

# A raw string (`...`) inside an action may itself hold braces.
ACTION = re.compile(r"{{(-?)\s*((?:`[^`]*`|.)*?)\s*(-?)}}", re.S)


def tokens(text):
    """Text and actions, with `{{-` / `-}}` trimming the whitespace beside them."""
    out, pos = [], 0
    for m in ACTION.finditer(text):
        out.append(["text", text[pos:m.start()]])
        if m.group(1) and out[-1][0] == "text":
            out[-1][1] = out[-1][1].rstrip()
        out.append(["action", m.group(2), bool(m.group(3))])
        pos = m.end()
    out.append(["text", text[pos:]])
    for i, t in enumerate(out):
        if t[0] == "action" and t[2] and i + 1 < len(out):
            out[i + 1][1] = out[i + 1][1].lstrip()
    return out


def parse(toks, i=0, until=("end",)):
    """A list of nodes up to one of `until`; answers (nodes, index, the word that ended it)."""
    nodes = []
    while i < len(toks):
        t = toks[i]
        if t[0] == "text":
            nodes.append(("text", t[1]))
            i += 1
            continue
        body = t[1]
        word = body.split(None, 1)[0] if body else ""
        if word in until:
            return nodes, i + 1, word
        if word == "if":
            then, i, ended = parse(toks, i + 1, ("else", "end"))
            other = []
            if ended == "else":
                other, i, _ = parse(toks, i, ("end",))
            nodes.append(("if", body[2:].strip(), then, other))
        elif word == "define":
            name = body.split(None, 1)[1].strip().strip('"')
            inner, i, _ = parse(toks, i + 1, ("end",))
            nodes.append(("define", name, inner))
        else:
            nodes.append(("expr", body))
            i += 1
    return nodes, i, None


def lookup(ctx, path):
    if path == ".":
        return ctx
    value = ctx
    for part in path.lstrip(".").split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def args_of(text):
    return re.findall(r'"(?:[^"\\]|\\.)*"|`[^`]*`|\S+', text)


def atom(ctx, defines, arg):
    if arg.startswith('"'):
        return json.loads(arg)
    if arg.startswith("`"):
        return arg[1:-1]
    if arg.startswith("."):
        return lookup(ctx, arg)
    if re.fullmatch(r"-?\d+", arg):
        return int(arg)
    raise ValueError(f"unsupported template argument {arg!r}")


def to_yaml(value):
    if value in (None, {}, []):
        return "[]" if value == [] else "{}"
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=False).rstrip("\n")


def call(ctx, defines, words, piped=None):
    name, rest = words[0], [atom(ctx, defines, a) for a in words[1:]]
    if piped is not None:
        rest.append(piped)
    if name == "include":
        return render(defines[rest[0]], rest[1], defines).strip("\n")
    if name == "quote":
        return json.dumps("" if rest[0] is None else str(rest[0]))
    if name == "default":
        return rest[1] if rest[1] not in (None, "", [], {}, 0, False) else rest[0]
    if name == "toYaml":
        return to_yaml(rest[0])
    if name in ("nindent", "indent"):
        pad = " " * rest[0]
        text = "\n".join(pad + line if line else line for line in str(rest[1]).split("\n"))
        return "\n" + text if name == "nindent" else text
    if len(words) == 1:
        return atom(ctx, defines, name)
    raise ValueError(f"unsupported template function {name!r}")


def evaluate(ctx, defines, expr):
    value = None
    for n, stage in enumerate(s.strip() for s in expr.split("|")):
        value = call(ctx, defines, args_of(stage), None if n == 0 else value)
    return value


def render(nodes, ctx, defines):
    out = []
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "expr":
            value = evaluate(ctx, defines, node[1])
            out.append("" if value is None else (json.dumps(value) if isinstance(value, bool) else str(value)))
        elif node[0] == "if":
            out.append(render(node[2] if evaluate(ctx, defines, node[1]) else node[3], ctx, defines))
    return "".join(out)


def main(argv):
    chart = Path(argv[0])
    values = yaml.safe_load((chart / "values.yaml").read_text())
    release, namespace = "mg", "default"
    args = iter(argv[1:])
    for arg in args:
        if arg == "--set":
            path, raw = next(args).split("=", 1)
            *parents, leaf = path.split(".")
            target = values
            for p in parents:
                target = target.setdefault(p, {})
            target[leaf] = yaml.safe_load(raw)
        elif arg == "--namespace":
            namespace = next(args)
        elif arg == "--release":
            release = next(args)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    ctx = {
        "Values": values,
        "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
        "Chart": {"Name": meta["name"], "Version": meta["version"], "AppVersion": meta["appVersion"]},
    }
    defines = {}
    for helper in sorted((chart / "templates").glob("_*.tpl")):
        nodes, _, _ = parse(tokens(helper.read_text()), until=())
        defines.update({n[1]: n[2] for n in nodes if n[0] == "define"})
    manifests = []
    for template in sorted((chart / "templates").glob("*.yaml")):
        nodes, _, _ = parse(tokens(template.read_text()), until=())
        text = render(nodes, ctx, defines)
        manifests += [doc for doc in yaml.safe_load_all(text) if doc]
    json.dump(manifests, sys.stdout, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
