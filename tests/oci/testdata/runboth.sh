#!/bin/sh
# runboth.sh BUNDLE LOGPREFIX [agent mode]: run the bundle in the foreground
# under runc, then crun, each with a fresh ./agent on /tmp/ociagent/x.sock
# (the bundle's listenerPath), and print the output and the agent's log.
# State dirs: /tmp/ocix/runc-root, /tmp/ocix/crun-root.
# stdin is a pipe: crun chowns its stdio to the container's root, which
# would make the host's /dev/null 100000:100000.
B=$1; L=$2; M=${3:-answer}
for rt in runc crun; do
  rm -f $L.$rt /tmp/ociagent/x.sock
  /tmp/ociagent/agent /tmp/ociagent/x.sock $L.$rt $M & AG=$!
  sleep 0.2
  cd $B
  if [ $rt = runc ]; then : | timeout 60 runc --root /tmp/ocix/runc-root run o-$rt > $L.$rt.out 2>&1; echo "rc=$?" >> $L.$rt.out
  else : | timeout 60 unshare -m sh -c 'umount /sys/fs/cgroup/unified && exec "$@"' sh crun --root /tmp/ocix/crun-root run o-$rt > $L.$rt.out 2>&1; echo "rc=$?" >> $L.$rt.out; fi
  sleep 3.3
  kill $AG; wait $AG 2>/dev/null
  echo "===== $rt output"; cat $L.$rt.out; echo "===== $rt agent log"; cat $L.$rt
done
rm -f /tmp/ociagent/x.sock
