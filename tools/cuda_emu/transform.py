# Rewrites kernel<<<grid, block, smem, stream>>>(args) as emu_launch(dim3(grid), dim3(block), [&] { kernel(args); }).
# Usage: transform.py in.cu out.cpp [constant=value ...] (overrides a `constexpr <type> constant = ...;`)
import re, sys
src = open(sys.argv[1]).read()
for name, value in (a.split('=', 1) for a in sys.argv[3:]):
    src, k = re.subn(r'(constexpr \w+ %s = )[^;]+;' % name, r'\g<1>%s;' % value, src)
    assert k == 1, name
out, pos = [], 0
while True:
    i = src.find('<<<', pos)
    if i < 0:
        out.append(src[pos:]); break
    # kernel expression: back over whitespace, optional <...>, identifier
    k = i
    while src[k-1].isspace(): k -= 1
    if src[k-1] == '>':
        depth = 0
        while True:
            k -= 1
            if src[k] == '>': depth += 1
            elif src[k] == '<':
                depth -= 1
                if depth == 0: break
    while src[k-1].isalnum() or src[k-1] == '_' or src[k-1] == ':': k -= 1
    kernel = src[k:i].strip()
    j = src.find('>>>', i)
    config = src[i+3:j]
    parts, depth, cur = [], 0, ''
    for ch in config:
        if ch in '([': depth += 1
        if ch in ')]': depth -= 1
        if ch == ',' and depth == 0: parts.append(cur); cur = ''
        else: cur += ch
    parts.append(cur)
    assert src[j+3] == '(', src[j:j+20]
    depth, e = 0, j + 3
    while True:
        if src[e] == '(': depth += 1
        elif src[e] == ')':
            depth -= 1
            if depth == 0: break
        e += 1
    args = src[j+4:e]
    out.append(src[pos:k])
    out.append('emu_launch(dim3(%s), dim3(%s), [&] { %s(%s); })' % (parts[0].strip(), parts[1].strip(), kernel, args))
    pos = e + 1
open(sys.argv[2], 'w').write(''.join(out))
