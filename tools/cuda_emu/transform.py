# Rewrites kernel<<<grid, block, smem, stream>>>(args) as emu_launch(dim3(grid), dim3(block), [&] { kernel(args); })
# in each source, written under OUT_DIR with the same relative path.
# Usage: transform.py SRC_ROOT OUT_DIR file ... [-- constant=value ...] (overrides a `constexpr <type> constant
# = ...;`, which must appear exactly once over all the files)
import os
import re
import sys


def rewrite_launches(src):
    out, pos = [], 0
    while True:
        i = src.find('<<<', pos)
        if i < 0:
            out.append(src[pos:])
            return ''.join(out)
        # kernel expression: back over whitespace, optional <...>, identifier
        k = i
        while src[k - 1].isspace():
            k -= 1
        if src[k - 1] == '>':
            depth = 0
            while True:
                k -= 1
                if src[k] == '>':
                    depth += 1
                elif src[k] == '<':
                    depth -= 1
                    if depth == 0:
                        break
        while src[k - 1].isalnum() or src[k - 1] in '_:':
            k -= 1
        kernel = src[k:i].strip()
        j = src.find('>>>', i)
        parts, depth, cur = [], 0, ''
        for ch in src[i + 3:j]:
            if ch in '([':
                depth += 1
            if ch in ')]':
                depth -= 1
            if ch == ',' and depth == 0:
                parts.append(cur)
                cur = ''
            else:
                cur += ch
        parts.append(cur)
        assert src[j + 3] == '(', src[j:j + 20]
        depth, e = 0, j + 3
        while True:
            if src[e] == '(':
                depth += 1
            elif src[e] == ')':
                depth -= 1
                if depth == 0:
                    break
            e += 1
        out.append(src[pos:k])
        out.append('emu_launch(dim3(%s), dim3(%s), [&] { %s(%s); })'
                   % (parts[0].strip(), parts[1].strip(), kernel, src[j + 4:e]))
        pos = e + 1


def main(argv):
    root, out_dir, rest = argv[0], argv[1], argv[2:]
    files, constants = (rest[:rest.index('--')], rest[rest.index('--') + 1:]) if '--' in rest else (rest, [])
    texts = {f: open(os.path.join(root, f)).read() for f in files}
    for name, value in (a.split('=', 1) for a in constants):
        found = 0
        for f, src in texts.items():
            texts[f], k = re.subn(r'(constexpr \w+ %s = )[^;]+;' % name, r'\g<1>%s;' % value, src)
            found += k
        assert found == 1, (name, found)
    for f, src in texts.items():
        target = os.path.join(out_dir, f)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, 'w').write(rewrite_launches(src))


main(sys.argv[1:])
