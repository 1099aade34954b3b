/**
 * The uuid tree: subvolumes by uuid (UUID_KEY_SUBVOL) and by the uuid they
 * were received from (UUID_KEY_RECEIVED_SUBVOL). Send names its parent and
 * clone sources by uuid; receive finds them here, as btrfs-progs does
 * through the kernel's tree search.
 */
import { KEY, OBJ } from '../format/constants.js';
import { key } from '../format/key.js';
import { decodeUuidItem, encodeUuidItem, uuidKeyParts } from '../format/items/uuid-item.js';
import type { Transaction } from '../transaction/transaction.js';

function uuidKey(uuid: Buffer, type: number) {
  const { objectid, offset } = uuidKeyParts(uuid);
  return key(objectid, type, offset);
}

/** Records subvolume `id` under `uuid` (an item may list several ids). */
export async function addUuidEntry(txn: Transaction, uuid: Buffer, type: number, id: bigint): Promise<void> {
  const k = uuidKey(uuid, type);
  const old = await txn.lookup(OBJ.UUID_TREE, k);
  if (old) {
    const ids = decodeUuidItem(old);
    if (ids.includes(id)) return;
    await txn.resize(OBJ.UUID_TREE, k, old.length + 8);
    await txn.update(OBJ.UUID_TREE, k, encodeUuidItem([...ids, id]));
  } else {
    await txn.insert(OBJ.UUID_TREE, k, encodeUuidItem([id]));
  }
}

/** The subvolume ids recorded under `uuid` as their own uuid or their received uuid. */
export async function subvolumesByUuid(txn: Transaction, uuid: Buffer, type: typeof KEY.UUID_KEY_SUBVOL | typeof KEY.UUID_KEY_RECEIVED_SUBVOL): Promise<bigint[]> {
  const raw = await txn.lookup(OBJ.UUID_TREE, uuidKey(uuid, type));
  return raw ? decodeUuidItem(raw) : [];
}
