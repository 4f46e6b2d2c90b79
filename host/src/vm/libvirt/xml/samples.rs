//! Live domain XML as libvirt shows it, for the tests.

pub(super) const LIVE: &str = r#"<domain type='qemu' id='1'>
  <name>lv1</name>
  <uuid>0d3c5d5e-7a48-4c3e-9f6b-3f6d3c1e2a10</uuid>
  <devices>
<emulator>/usr/bin/qemu-system-x86_64</emulator>
<disk type='file' device='cdrom'>
  <driver name='qemu' type='raw'/>
  <source file='/srv/user &amp; co.iso' index='1'/>
  <target dev='hdc' bus='ide' tray='closed'/>
  <readonly/>
  <alias name='ide0-1-0'/>
</disk>
<controller type='ide' index='0'/>
<disk type='file' device='disk'>
  <source file='/var/lib/libvirt/images/root.qcow2'/>
  <target dev='vda' bus='virtio'/>
</disk>
<disk type='file' device='cdrom'>
  <driver name='qemu'/>
  <target dev='sda' bus='sata' tray='open'/>
  <readonly/>
</disk>
<serial type='file'><source path='/tmp/c'/></serial>
<channel type='unix'>
  <source mode='bind' path='/run/libvirt/qemu/channel/1-lv1/org.qemu.guest_agent.0'/>
  <target type='virtio' name='org.qemu.guest_agent.0' state='connected'/>
</channel>
  </devices>
</domain>"#;

pub(super) const VOLUME: &str = r#"<domain type='qemu' id='2'>
  <name>lv2</name>
  <devices>
<disk type='volume' device='cdrom'>
  <driver name='qemu' type='raw'/>
  <source pool='isos' volume='user "disc".iso' startupPolicy='optional' index='3'>
    <seclabel model='dac' relabel='no'/>
  </source>
  <target dev='hdc' bus='ide' tray='closed'/>
  <readonly/>
</disk>
<disk type='network' device='cdrom'>
  <source protocol='http' name='/pub/x.iso' index='4'>
    <host name='mirror.example' port='80'/>
  </source>
  <target dev='hdd' bus='ide'/>
  <readonly/>
</disk>
<disk type='file' device='cdrom'>
  <source index='5'/>
  <target dev='sda' bus='sata'/>
</disk>
<disk type='dir' device='cdrom'>
  <source dir='/srv/tree'/>
  <target dev='sdb' bus='sata'/>
</disk>
  </devices>
</domain>"#;
