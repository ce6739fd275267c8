#!/bin/bash
# Regenerates every fixture in this directory on real OpenZFS (2.3.2 for the
# committed ones; capture.log is that run's output):
#   cd /work/main && vm/run --out "$PWD/crates/zoffsite-core/testdata" -- crates/zoffsite-core/testdata/capture.sh
# The data is random, so GUIDs and sizes change on every run; the tests take
# GUIDs from guids.txt and record counts from the *.summary files, so they
# follow a regeneration without edits.
set -uo pipefail
O=$ZOFFSITE_VM_OUT
exec > >(tee "$O/capture.log") 2>&1
set -x
zfs version
truncate -s 256M /tmp/p.img
zpool create -O compression=off -O mountpoint=/t t /tmp/p.img
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > /tmp/key
enc="-o encryption=on -o keyformat=hex -o keylocation=file:///tmp/key"

# t/src: encrypted; lz4 so a text file gives a WRITE whose compressed_size
# differs from logical_size; a big xattr with xattr=sa gives a SPILL record.
zfs create $enc -o compression=lz4 -o xattr=sa -o dnodesize=legacy t/src
head -c 5000 /dev/urandom > /t/src/a
head -c 3000 /dev/urandom > /t/src/b
seq 1 1200 > /t/src/text
python3 -c 'import os; os.setxattr("/t/src/b", "user.big", os.urandom(1500))'
zfs snapshot t/src@s1
echo more >> /t/src/a; head -c 2000 /dev/urandom > /t/src/c
zfs snapshot t/src@s2
rm /t/src/b; truncate -s 100 /t/src/a
zfs snapshot t/src@s3
head -c 1000 /dev/urandom > /t/src/d
zfs snapshot t/src@s4

# t/plain: unencrypted; `zfs send -w` of it is NOT raw (it means -Lec).
zfs create -o compression=lz4 -o xattr=sa -o dnodesize=legacy t/plain
echo hello > /t/plain/h; seq 1 1500 > /t/plain/text
python3 -c 'import os; os.setxattr("/t/plain/text", "user.big", os.urandom(1500))'
zfs snapshot t/plain@p1
seq 1 300 >> /t/plain/text; echo bye > /t/plain/g
zfs snapshot t/plain@p2

# t/big: encrypted, for interrupted receives.
zfs create $enc t/big
for i in 1 2 3 4 5; do head -c 4096 /dev/urandom > /t/big/f$i; done
zfs snapshot t/big@b1
for i in 6 7 8 9 10; do head -c 4096 /dev/urandom > /t/big/f$i; done
zfs snapshot t/big@b2
zfs list -H -p -t all -o name,guid,encryption -r t > "$O/guids.txt"

zfs send -w t/src@s1 > "$O/raw-full.zstream"
zfs send -w -I @s1 t/src@s4 > "$O/raw-I.zstream"
zfs send -w -i @s1 t/src@s2 > /tmp/raw-incr
zfs send -w -R t/src@s2 > /tmp/raw-R
zfs send -w -i @p1 t/plain@p2 > "$O/plain-incr.zstream"
# -R = compound BEGIN + payload + END, then the same bytes as the full and
# the -i stream, then a final END: keep only the head.
plen=$(od -An -tu4 -j4 -N4 /tmp/raw-R | tr -d ' ')
hlen=$((312 + plen + 312))
head -c $hlen /tmp/raw-R > "$O/raw-R-head.bin"
same() { if cmp -s "$1" "$2"; then echo "SAME: $3"; else echo "DIFFERENT: $3"; fi; }
full=$(stat -c %s "$O/raw-full.zstream"); incr=$(stat -c %s /tmp/raw-incr)
tail -c +$((hlen + 1)) /tmp/raw-R | head -c $full > /tmp/r1; same /tmp/r1 "$O/raw-full.zstream" "-R bytes $hlen.. = the full stream"
tail -c +$((hlen + 1 + full)) /tmp/raw-R | head -c $incr > /tmp/r2; same /tmp/r2 /tmp/raw-incr "-R next $incr bytes = the -i stream"
tail -c 312 /tmp/raw-R > /tmp/r3; { printf '\005'; head -c 311 /dev/zero; } > /tmp/end; same /tmp/r3 /tmp/end "-R ends with an all-zero END"
echo "-R total $(stat -c %s /tmp/raw-R) = $hlen + $full + $incr + 312"
tail -c +625 "$O/raw-I.zstream" | head -c $incr > /tmp/i1; same /tmp/i1 /tmp/raw-incr "-I bytes 624.. = the -i stream ($incr bytes)"

nvt() { # name token: decode a token the way the source does
	zfs send -nvt "$2" > "$O/nvt-$1.txt" 2> /tmp/err; echo "nvt-$1: rc=$? stderr=$(cat /tmp/err)"
}

# interrupted raw full receive
zfs send -w t/big@b1 > /tmp/big-full
head -c $(( $(stat -c %s /tmp/big-full) * 6 / 10 )) /tmp/big-full | zfs receive -s -u t/dstfull; echo "rc=$?"
tokfull=$(zfs get -H -p -o value receive_resume_token t/dstfull)
printf '%s\n' "$tokfull" > "$O/token-full.txt"
nvt full "$tokfull"
zfs send -nvPt "$tokfull"
zfs send -w -t "$tokfull" > /tmp/resumed-full; echo "send rc=$?"
zfs receive -s -u t/dstfull < /tmp/resumed-full; echo "resume recv rc=$?"

# interrupted raw incremental receive: the token shows on t/dstinc and t/dstinc/%recv
zfs receive -u t/dstinc < /tmp/big-full
zfs send -w -i @b1 t/big@b2 > /tmp/big-incr
head -c $(( $(stat -c %s /tmp/big-incr) * 6 / 10 )) /tmp/big-incr | zfs receive -s -u t/dstinc; echo "rc=$?"
zfs get -H -p -o name,property,value receive_resume_token t/dstinc t/dstinc/%recv
tokinc=$(zfs get -H -p -o value receive_resume_token t/dstinc)
printf '%s\n' "$tokinc" > "$O/token-incr.txt"
nvt incr "$tokinc"
zfs send -w -t "$tokinc" > "$O/raw-resumed-incr.zstream"; echo "send rc=$?"
zfs receive -s -u t/dstinc < "$O/raw-resumed-incr.zstream"; echo "resume recv rc=$?"
zfs list -H -p -t all -o name,guid -r t/dstinc

# interrupted -I (compound) receive: the token is for the substream in flight
zfs receive -u t/dstI < "$O/raw-full.zstream"
head -c $(( $(stat -c %s "$O/raw-I.zstream") * 7 / 10 )) "$O/raw-I.zstream" | zfs receive -s -u t/dstI; echo "rc=$?"
zfs list -H -p -t all -o name,guid -r t/dstI
nvt I "$(zfs get -H -p -o value receive_resume_token t/dstI)"

# interrupted NON-raw receive (-Lec): token without rawok
zfs send -Lec t/plain@p1 > /tmp/plain-full
head -c $(( $(stat -c %s /tmp/plain-full) * 6 / 10 )) /tmp/plain-full | zfs receive -s -u t/dstplain; echo "rc=$?"
nvt nonraw "$(zfs get -H -p -o value receive_resume_token t/dstplain)"

# the fixtures receive
zfs receive -u t/chk < "$O/raw-full.zstream"; echo "rc=$?"
zfs receive -u t/chk < "$O/raw-I.zstream"; echo "rc=$?"
zfs list -H -p -t all -o name,guid -r t/chk

# what -t does with a token whose toname no longer names its toguid:
# ZFS looks the GUID up in ever larger parts of the pool and sends what it finds
zfs rename t/big@b1 t/big@b1-renamed
nvt renamed-snap "$tokfull"
zfs rename t/big t/moved
nvt moved-dataset "$tokfull"
zfs destroy -r t/moved
nvt gone "$tokfull"
zfs send -nvt 1-deadbeef-10-00; echo "rc=$?"
zfs send -nvt not-a-token; echo "rc=$?"
ls -l "$O"

# OpenZFS's own count of each stream's records, which the tests compare with
# their walk (zstream runs anywhere, no kernel module needed).
for f in raw-full raw-I plain-incr raw-resumed-incr; do
	zstream dump "$O/$f.zstream" | sed -n '/^SUMMARY:/,$p' > "$O/$f.summary"
done
