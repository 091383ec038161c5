#!/bin/bash
# usage: bash bench/thread_cpu.sh PATH/cortexd (started alongside a bench): each thread of the
# cortexd started from that path, its CPU seconds (utime+stime) last seen before it ended
# (polled every 0.2 s), and their sum
cx=$1
for i in $(seq 1 240); do pid=$(pgrep -f -x "$cx .*" | head -1); [ -n "$pid" ] && [ $(ls /proc/$pid/task 2>/dev/null | wc -l) -gt 2 ] && break; sleep 0.5; done
declare -A last
while [ -d /proc/$pid ]; do
  for t in /proc/$pid/task/*; do
    v=$(awk '{s=$0; sub(/.*\) /,"",s); split(s,f," "); print f[12]+f[13]}' $t/stat 2>/dev/null)
    [ -n "$v" ] && last[$(basename $t)]=$v
  done
  sleep 0.2
done
tot=0; out=""
for k in $(echo "${!last[@]}" | tr ' ' '\n' | sort -n); do out="$out $k:$(awk -v v=${last[$k]} 'BEGIN{printf "%.2f", v/100}')"; tot=$((tot + ${last[$k]})); done
echo "$out sum:$(awk -v v=$tot 'BEGIN{printf "%.2f", v/100}')"
