// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title DIAMS device identity registry (one deployment per channel)
/// @notice Identities, lifecycle, gateways, per-device gateway keys (sealed) and access policies.
/// Strategy: the lifecycle is one table (`_FROM_*` masks: which states an operation may start from),
/// checked by `_transition`; every refusal is a custom error, every state change an event.
/// No secret is ever stored or logged here: characteristics and claim codes are salted hashes,
/// gateway verification keys are sealed to the gateway's X25519 key off chain.
contract DeviceRegistry is AccessControl {
    bytes32 public constant MANUFACTURER_ROLE = keccak256("MANUFACTURER_ROLE");
    bytes32 public constant MAINTAINER_ROLE = keccak256("MAINTAINER_ROLE");
    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");

    /// Unregistered is the zero value of an unknown device id; it is never a target.
    enum State { Unregistered, Manufactured, Claimed, Active, Suspended, Transferred, Revoked, Decommissioned }

    struct Device {
        address manufacturer;
        State state;
        uint32 epoch;
        address owner;
        address pendingOwner;
        bytes32 model;
        bytes32 firmwareHash;
        bytes32 characteristics;
        bytes32 claimHash;
        bytes32 policyId;
    }

    struct Registration {
        bytes8 id;
        bytes32 model;
        bytes32 firmwareHash;
        bytes32 characteristics;
        bytes32 claimHash;
    }

    /// `generation` moves on every key rotation and on removal: grants sealed to an older generation's
    /// key no longer count. A removed gateway keeps its record (operator, removed) so its id is never reused.
    struct Gateway {
        bytes32 x25519PublicKey;
        address account;
        address operator;
        uint32 generation;
        bool removed;
    }

    struct Grant {
        uint32 epoch;
        bytes32 keyCommitment;
        bytes sealedKey;
        uint32 generation;
    }

    struct GrantStatus {
        State state;
        uint32 epoch;
        bytes32 firmwareHash;
        bool[] granted;
        bool[] current;
    }

    /// Policies live in their author's namespace: id = policyKey(author, name), so nobody can squat a
    /// predictable id of another owner. A shared policy is frozen: others may use it, nobody changes it.
    struct Policy {
        address author;
        string publishStreams;
        string subscribeStreams;
        bool shared;
    }

    // ---- the lifecycle table: allowed source states per operation (bit i = State(i)) ----
    uint256 private constant _M = 1 << uint256(State.Manufactured);
    uint256 private constant _C = 1 << uint256(State.Claimed);
    uint256 private constant _A = 1 << uint256(State.Active);
    uint256 private constant _S = 1 << uint256(State.Suspended);
    uint256 private constant _T = 1 << uint256(State.Transferred);
    uint256 private constant _FROM_CLAIM = _M;
    uint256 private constant _FROM_ACTIVATE = _C | _S;
    uint256 private constant _FROM_SUSPEND = _A;
    uint256 private constant _FROM_TRANSFER = _C | _A | _S;
    uint256 private constant _FROM_ACCEPT = _T;
    uint256 private constant _FROM_CANCEL = _T;
    uint256 private constant _FROM_REVOKE = _M | _C | _A | _S | _T;
    uint256 private constant _FROM_DECOMMISSION = _C | _A | _S;
    /// Operations that keep the state (firmware, gateways, policy, maintainers) need an owned, live device.
    uint256 private constant _LIVE = _C | _A | _S;

    uint256 public constant MAX_SEALED_KEY = 256;
    uint256 public constant MAX_STREAMS = 512;

    mapping(bytes8 => Device) private _devices;
    mapping(bytes32 => Gateway) private _gateways;
    mapping(bytes8 => mapping(bytes32 => Grant)) private _grants;
    mapping(bytes32 => Policy) private _policies;
    /// maintainer approvals are bound to the owner who gave them: a new owner starts with none.
    mapping(bytes8 => mapping(address => address)) private _maintainerApprovedBy;
    /// The device's static X25519 public key, made on the device at manufacture (re-keying, PROTOCOL 2.3).
    mapping(bytes8 => bytes32) private _deviceKeys;
    /// Set when a device with a key changes owner: no gateway may be authorized until the new owner has
    /// re-keyed the device (the previous owner knows S) and recorded the key confirmation.
    mapping(bytes8 => bool) private _rekeyPending;

    // ---- errors ----
    error DeviceExists(bytes8 id);
    error UnknownDevice(bytes8 id);
    error IllegalTransition(bytes8 id, State current, bytes4 operation);
    error NotOwner(bytes8 id, address account);
    error NotOwnerOrAdmin(bytes8 id, address account);
    error NotPendingOwner(bytes8 id, address account);
    error BadClaimCode(bytes8 id);
    error InvalidAddress(address account);
    error EmptyValue(bytes32 field);
    error MaintainerNotApproved(bytes8 id, address maintainer);
    error GatewayExists(bytes32 gatewayId);
    error UnknownGateway(bytes32 gatewayId);
    error GatewayNotAuthorized(bytes8 id, bytes32 gatewayId);
    error BadSealedKey(uint256 length);
    error LengthMismatch(uint256 expected, uint256 actual);
    error UnknownPolicy(bytes32 policyId);
    error PolicyFrozen(bytes32 policyId);
    error PolicyNotShared(bytes32 policyId, address account);
    error NotGatewayOperator(bytes32 gatewayId, address account);
    error EpochNotBumped(bytes8 id, bytes32 gatewayId, uint32 epoch);
    error DeviceKeyExists(bytes8 id);
    error NotManufacturer(bytes8 id, address account);
    error NoDeviceKey(bytes8 id);
    error RekeyPending(bytes8 id);
    error NoRekeyPending(bytes8 id);
    error StreamsTooLong(uint256 length);

    // ---- events (one per state change) ----
    event DeviceRegistered(bytes8 indexed id, address indexed manufacturer, bytes32 model, bytes32 firmwareHash,
        bytes32 characteristics);
    event DeviceClaimed(bytes8 indexed id, address indexed owner);
    event DeviceActivated(bytes8 indexed id, address indexed by);
    event DeviceSuspended(bytes8 indexed id, address indexed by);
    event TransferStarted(bytes8 indexed id, address indexed from, address indexed to, uint32 epoch);
    event TransferAccepted(bytes8 indexed id, address indexed newOwner);
    event TransferCancelled(bytes8 indexed id, address indexed owner);
    event DeviceRevoked(bytes8 indexed id, address indexed by, uint32 epoch);
    event DeviceDecommissioned(bytes8 indexed id, address indexed by, uint32 epoch);
    event MaintainerApproved(bytes8 indexed id, address indexed maintainer, address indexed owner);
    event FirmwareRecorded(bytes8 indexed id, address indexed maintainer, bytes32 firmwareHash, uint32 epoch);
    event GatewayRegistered(bytes32 indexed gatewayId, address indexed account, address indexed operator,
        bytes32 x25519PublicKey);
    event GatewayAuthorized(bytes8 indexed id, bytes32 indexed gatewayId, uint32 epoch, bytes32 keyCommitment,
        bytes sealedKey);
    event GatewayDeauthorized(bytes8 indexed id, bytes32 indexed gatewayId, uint32 epoch);
    /// `name` is the author's name for it (policyId = policyKey(author, name)): the one place the chain
    /// keeps it, for indexes and consoles to show.
    event PolicyDefined(bytes32 indexed policyId, address indexed author, bytes32 name, string publishStreams,
        string subscribeStreams);
    event PolicySet(bytes8 indexed id, bytes32 indexed policyId);
    event PolicyShared(bytes32 indexed policyId, address indexed author);
    event DeviceKeyRegistered(bytes8 indexed id, bytes32 x25519PublicKey);
    event DeviceRekeyed(bytes8 indexed id, address indexed owner, bytes32 keyCommitment, uint32 epoch);
    /// The new owner names the gateway that carries the re-key exchange, with the device's broker password
    /// from S sealed to it: that gateway lets the device log in for its re-key topics only (PROTOCOL 2.3).
    event RekeyStarted(bytes8 indexed id, bytes32 indexed gatewayId, uint32 epoch, bytes sealedPassword);
    event GatewayKeyRotated(bytes32 indexed gatewayId, bytes32 x25519PublicKey, uint32 generation);
    event GatewayAccountChanged(bytes32 indexed gatewayId, address indexed account);
    event GatewayRemoved(bytes32 indexed gatewayId, uint32 generation);

    constructor(address admin) {
        if (admin == address(0)) revert InvalidAddress(admin);
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    // ---- manufacturer ----
    function registerDevice(Registration calldata r) external onlyRole(MANUFACTURER_ROLE) {
        _register(r);
    }

    function registerMany(Registration[] calldata rs) external onlyRole(MANUFACTURER_ROLE) {
        for (uint256 i = 0; i < rs.length; ++i) _register(rs[i]);
    }

    function _register(Registration calldata r) private {
        if (r.id == bytes8(0)) revert EmptyValue("id");
        if (r.claimHash == bytes32(0)) revert EmptyValue("claimHash");
        Device storage d = _devices[r.id];
        if (d.state != State.Unregistered) revert DeviceExists(r.id);
        d.manufacturer = msg.sender;
        d.state = State.Manufactured;
        d.model = r.model;
        d.firmwareHash = r.firmwareHash;
        d.characteristics = r.characteristics;
        d.claimHash = r.claimHash;
        emit DeviceRegistered(r.id, msg.sender, r.model, r.firmwareHash, r.characteristics);
    }

    /// The manufacturer registers the device's static X25519 public key, once, before anyone claims it.
    function registerDeviceKey(bytes8 id, bytes32 x25519PublicKey) external {
        _registerDeviceKey(id, x25519PublicKey);
    }

    /// Many devices' keys in one transaction: each as by registerDeviceKey, all or none (a refusal names
    /// the device).
    function registerDeviceKeyMany(bytes8[] calldata ids, bytes32[] calldata x25519PublicKeys) external {
        if (x25519PublicKeys.length != ids.length) revert LengthMismatch(ids.length, x25519PublicKeys.length);
        for (uint256 i = 0; i < ids.length; ++i) _registerDeviceKey(ids[i], x25519PublicKeys[i]);
    }

    function _registerDeviceKey(bytes8 id, bytes32 x25519PublicKey) private {
        Device storage d = _transition(id, _M);
        if (msg.sender != d.manufacturer) revert NotManufacturer(id, msg.sender);
        if (x25519PublicKey == bytes32(0)) revert EmptyValue("x25519PublicKey");
        if (_deviceKeys[id] != bytes32(0)) revert DeviceKeyExists(id);
        _deviceKeys[id] = x25519PublicKey;
        emit DeviceKeyRegistered(id, x25519PublicKey);
    }

    /// The owner records that it re-keyed the device (key confirmation passed): `keyCommitment` =
    /// HMAC(S', "diams/v1/rekey-commitment"). Bumps the epoch (every key from the old S is void) and
    /// lifts the block on authorizing gateways set at acceptTransfer.
    function confirmRekey(bytes8 id, bytes32 keyCommitment) external {
        Device storage d = _transition(id, _LIVE);
        _onlyOwner(id, d);
        if (_deviceKeys[id] == bytes32(0)) revert NoDeviceKey(id);
        if (keyCommitment == bytes32(0)) revert EmptyValue("keyCommitment");
        _rekeyPending[id] = false;
        uint32 epoch = ++d.epoch;
        emit DeviceRekeyed(id, msg.sender, keyCommitment, epoch);
    }

    /// While a re-key is pending, the owner names the gateway that carries the exchange and gives it the
    /// device's broker password from S (which the device logs in with until CONFIRM), sealed to that
    /// gateway's key for this epoch. That gateway gives the device a broker account for its re-key
    /// topics with it, nothing else, until confirmRekey bumps the epoch. Naming again replaces it.
    function startRekey(bytes8 id, bytes32 gatewayId, bytes calldata sealedPassword) external {
        Device storage d = _transition(id, _LIVE);
        _onlyOwner(id, d);
        if (!_rekeyPending[id]) revert NoRekeyPending(id);
        if (_gateways[gatewayId].account == address(0)) revert UnknownGateway(gatewayId);
        if (sealedPassword.length == 0 || sealedPassword.length > MAX_SEALED_KEY) {
            revert BadSealedKey(sealedPassword.length);
        }
        emit RekeyStarted(id, gatewayId, d.epoch, sealedPassword);
    }

    // ---- lifecycle ----
    /// Revealing the claim code in a public mempool lets an observer front-run it: see docs/LEDGER.md.
    function claim(bytes8 id, bytes calldata claimCode) external {
        _claim(id, claimCode);
    }

    function activate(bytes8 id) external {
        _activate(id);
    }

    /// An owner takes a batch of new devices into service in one transaction: claim each with its
    /// code, give it the owner's own policy `policyName`, activate it. All or nothing; the same events
    /// as one by one.
    function onboardMany(bytes8[] calldata ids, bytes[] calldata claimCodes, bytes32 policyName) external {
        if (claimCodes.length != ids.length) revert LengthMismatch(ids.length, claimCodes.length);
        bytes32 policyId = policyKey(msg.sender, policyName);
        for (uint256 i = 0; i < ids.length; ++i) {
            _claim(ids[i], claimCodes[i]);
            _setPolicy(ids[i], policyId);
            _activate(ids[i]);
        }
    }

    function _claim(bytes8 id, bytes calldata claimCode) private {
        Device storage d = _transition(id, _FROM_CLAIM);
        if (sha256(abi.encodePacked("diams/v1/claim", id, claimCode)) != d.claimHash) revert BadClaimCode(id);
        d.owner = msg.sender;
        d.state = State.Claimed;
        emit DeviceClaimed(id, msg.sender);
    }

    function _activate(bytes8 id) private {
        Device storage d = _transition(id, _FROM_ACTIVATE);
        _onlyOwner(id, d);
        d.state = State.Active;
        emit DeviceActivated(id, msg.sender);
    }

    function suspend(bytes8 id) external {
        Device storage d = _transition(id, _FROM_SUSPEND);
        _onlyOwnerOrAdmin(id, d);
        d.state = State.Suspended;
        emit DeviceSuspended(id, msg.sender);
    }

    function transfer(bytes8 id, address newOwner) external {
        Device storage d = _transition(id, _FROM_TRANSFER);
        _onlyOwner(id, d);
        if (newOwner == address(0) || newOwner == d.owner) revert InvalidAddress(newOwner);
        d.pendingOwner = newOwner;
        d.state = State.Transferred;
        uint32 epoch = ++d.epoch;
        emit TransferStarted(id, msg.sender, newOwner, epoch);
    }

    function acceptTransfer(bytes8 id) external {
        Device storage d = _transition(id, _FROM_ACCEPT);
        if (msg.sender != d.pendingOwner) revert NotPendingOwner(id, msg.sender);
        d.owner = msg.sender;
        d.pendingOwner = address(0);
        d.state = State.Claimed;
        emit TransferAccepted(id, msg.sender);
        if (_deviceKeys[id] != bytes32(0)) _rekeyPending[id] = true;
        // the previous owner's private policy would let it steer the new owner's device: drop it
        bytes32 pid = d.policyId;
        if (pid != bytes32(0) && !_policies[pid].shared && _policies[pid].author != msg.sender) {
            d.policyId = bytes32(0);
            emit PolicySet(id, bytes32(0));
        }
    }

    /// The owner withdraws an offer (e.g. to a mistyped address); the epoch stays bumped, so the owner
    /// re-publishes gateway keys as after any transfer.
    function cancelTransfer(bytes8 id) external {
        Device storage d = _transition(id, _FROM_CANCEL);
        _onlyOwner(id, d);
        d.pendingOwner = address(0);
        d.state = State.Claimed;
        emit TransferCancelled(id, msg.sender);
    }

    function revoke(bytes8 id) external {
        Device storage d = _transition(id, _FROM_REVOKE);
        _onlyOwnerOrAdmin(id, d);
        d.state = State.Revoked;
        d.pendingOwner = address(0);
        uint32 epoch = ++d.epoch;
        emit DeviceRevoked(id, msg.sender, epoch);
    }

    function decommission(bytes8 id) external {
        Device storage d = _transition(id, _FROM_DECOMMISSION);
        _onlyOwner(id, d);
        d.state = State.Decommissioned;
        uint32 epoch = ++d.epoch;
        emit DeviceDecommissioned(id, msg.sender, epoch);
    }

    // ---- maintainers ----
    function approveMaintainer(bytes8 id, address maintainer) external {
        Device storage d = _transition(id, _LIVE);
        _onlyOwner(id, d);
        if (maintainer == address(0)) revert InvalidAddress(maintainer);
        _maintainerApprovedBy[id][maintainer] = msg.sender;
        emit MaintainerApproved(id, maintainer, msg.sender);
    }

    function recordFirmware(bytes8 id, bytes32 newHash) external onlyRole(MAINTAINER_ROLE) {
        _recordFirmware(id, newHash);
    }

    /// A fleet's update in one transaction: each device as by recordFirmware, all or none.
    function recordFirmwareMany(bytes8[] calldata ids, bytes32[] calldata newHashes)
        external onlyRole(MAINTAINER_ROLE)
    {
        if (newHashes.length != ids.length) revert LengthMismatch(ids.length, newHashes.length);
        for (uint256 i = 0; i < ids.length; ++i) _recordFirmware(ids[i], newHashes[i]);
    }

    function _recordFirmware(bytes8 id, bytes32 newHash) private {
        Device storage d = _transition(id, _LIVE);
        if (_maintainerApprovedBy[id][msg.sender] != d.owner) revert MaintainerNotApproved(id, msg.sender);
        if (newHash == bytes32(0)) revert EmptyValue("firmwareHash");
        d.firmwareHash = newHash;
        uint32 epoch = ++d.epoch;
        emit FirmwareRecorded(id, msg.sender, newHash, epoch);
    }

    // ---- gateways ----
    function registerGateway(bytes32 gatewayId, bytes32 x25519PublicKey, address account)
        external onlyRole(OPERATOR_ROLE)
    {
        if (gatewayId == bytes32(0)) revert EmptyValue("gatewayId");
        if (x25519PublicKey == bytes32(0)) revert EmptyValue("x25519PublicKey");
        if (account == address(0)) revert InvalidAddress(account);
        if (_gateways[gatewayId].operator != address(0)) revert GatewayExists(gatewayId);
        _gateways[gatewayId] = Gateway(x25519PublicKey, account, msg.sender, 0, false);
        emit GatewayRegistered(gatewayId, account, msg.sender, x25519PublicKey);
    }

    /// A new X25519 key (the old one is lost or exposed): every grant sealed to the old key stops
    /// counting at once, and since the old key opens the current epoch's sealed K_dg, an owner must bump
    /// the device's epoch (deauthorizeGateway) before sealing for the new key (EpochNotBumped otherwise).
    function rotateGatewayKey(bytes32 gatewayId, bytes32 x25519PublicKey) external {
        Gateway storage g = _gatewayOf(gatewayId);
        if (x25519PublicKey == bytes32(0)) revert EmptyValue("x25519PublicKey");
        g.x25519PublicKey = x25519PublicKey;
        uint32 generation = ++g.generation;
        emit GatewayKeyRotated(gatewayId, x25519PublicKey, generation);
    }

    /// A new signing account (anchors, clone alerts); the sealing key and the grants are unchanged.
    function changeGatewayAccount(bytes32 gatewayId, address account) external {
        Gateway storage g = _gatewayOf(gatewayId);
        if (account == address(0)) revert InvalidAddress(account);
        g.account = account;
        emit GatewayAccountChanged(gatewayId, account);
    }

    /// Retires a gateway for good: its account can no longer anchor or alert, its grants stop counting,
    /// its id is never registered again.
    function removeGateway(bytes32 gatewayId) external {
        Gateway storage g = _gatewayOf(gatewayId);
        g.removed = true;
        g.account = address(0);
        uint32 generation = ++g.generation;
        emit GatewayRemoved(gatewayId, generation);
    }

    /// A live gateway that msg.sender may manage: the operator that registered it, or a channel admin.
    function _gatewayOf(bytes32 gatewayId) private view returns (Gateway storage g) {
        g = _gateways[gatewayId];
        if (g.operator == address(0) || g.removed) revert UnknownGateway(gatewayId);
        if (msg.sender != g.operator && !hasRole(DEFAULT_ADMIN_ROLE, msg.sender)) {
            revert NotGatewayOperator(gatewayId, msg.sender);
        }
    }

    function authorizeGateway(bytes8 id, bytes32 gatewayId, bytes calldata sealedKey, bytes32 keyCommitment)
        external
    {
        _authorize(id, gatewayId, sealedKey, keyCommitment);
    }

    /// The group variant: one gateway, many devices (e.g. every device of one policy group).
    function authorizeGatewayMany(
        bytes8[] calldata ids,
        bytes32 gatewayId,
        bytes[] calldata sealedKeys,
        bytes32[] calldata keyCommitments
    ) external {
        if (sealedKeys.length != ids.length) revert LengthMismatch(ids.length, sealedKeys.length);
        if (keyCommitments.length != ids.length) revert LengthMismatch(ids.length, keyCommitments.length);
        for (uint256 i = 0; i < ids.length; ++i) _authorize(ids[i], gatewayId, sealedKeys[i], keyCommitments[i]);
    }

    function _authorize(bytes8 id, bytes32 gatewayId, bytes calldata sealedKey, bytes32 keyCommitment) private {
        Device storage d = _transition(id, _LIVE);
        _onlyOwner(id, d);
        if (_rekeyPending[id]) revert RekeyPending(id);
        Gateway storage gw = _gateways[gatewayId];
        if (gw.account == address(0)) revert UnknownGateway(gatewayId);
        if (sealedKey.length == 0 || sealedKey.length > MAX_SEALED_KEY) revert BadSealedKey(sealedKey.length);
        if (keyCommitment == bytes32(0)) revert EmptyValue("keyCommitment");
        Grant storage old = _grants[id][gatewayId];
        if (old.keyCommitment != bytes32(0) && old.epoch == d.epoch && old.generation != gw.generation) {
            revert EpochNotBumped(id, gatewayId, d.epoch);
        }
        _grants[id][gatewayId] = Grant(d.epoch, keyCommitment, sealedKey, gw.generation);
        emit GatewayAuthorized(id, gatewayId, d.epoch, keyCommitment, sealedKey);
    }

    /// Bumps the epoch: every gateway's key for this device is invalid until the owner re-publishes.
    /// Also accepted for a grant of this epoch sealed to a rotated or removed gateway key.
    function deauthorizeGateway(bytes8 id, bytes32 gatewayId) external {
        Device storage d = _transition(id, _LIVE);
        _onlyOwner(id, d);
        Grant storage g = _grants[id][gatewayId];
        if (g.keyCommitment == bytes32(0) || g.epoch != d.epoch) revert GatewayNotAuthorized(id, gatewayId);
        delete _grants[id][gatewayId];
        uint32 epoch = ++d.epoch;
        emit GatewayDeauthorized(id, gatewayId, epoch);
    }

    // ---- policies ----
    /// The on-chain id of `author`'s policy `name`: nobody else can define or change it.
    function policyKey(address author, bytes32 name) public pure returns (bytes32) {
        return keccak256(abi.encode(author, name));
    }

    /// Defines or changes msg.sender's policy `name` (its id: policyKey(msg.sender, name)).
    function definePolicy(bytes32 name, string calldata publishStreams, string calldata subscribeStreams)
        external
    {
        if (name == bytes32(0)) revert EmptyValue("policyId");
        uint256 len = bytes(publishStreams).length + bytes(subscribeStreams).length;
        if (len > MAX_STREAMS) revert StreamsTooLong(len);
        bytes32 policyId = policyKey(msg.sender, name);
        Policy storage p = _policies[policyId];
        if (p.shared) revert PolicyFrozen(policyId);
        p.author = msg.sender;
        p.publishStreams = publishStreams;
        p.subscribeStreams = subscribeStreams;
        emit PolicyDefined(policyId, msg.sender, name, publishStreams, subscribeStreams);
    }

    /// Lets other owners use msg.sender's policy `name`; from then on it is frozen (read-only to all).
    function sharePolicy(bytes32 name) external {
        bytes32 policyId = policyKey(msg.sender, name);
        Policy storage p = _policies[policyId];
        if (p.author == address(0)) revert UnknownPolicy(policyId);
        p.shared = true;
        emit PolicyShared(policyId, msg.sender);
    }

    /// Gives the device its owner's own policy `name`.
    function setPolicy(bytes8 id, bytes32 name) external {
        _setPolicy(id, policyKey(msg.sender, name));
    }

    /// Gives the device a policy by its full id: the owner's own, or one its author shared.
    function useSharedPolicy(bytes8 id, bytes32 policyId) external {
        _setPolicy(id, policyId);
    }

    function _setPolicy(bytes8 id, bytes32 policyId) private {
        Device storage d = _transition(id, _LIVE);
        _onlyOwner(id, d);
        Policy storage p = _policies[policyId];
        if (p.author == address(0)) revert UnknownPolicy(policyId);
        if (p.author != msg.sender && !p.shared) revert PolicyNotShared(policyId, msg.sender);
        d.policyId = policyId;
        emit PolicySet(id, policyId);
    }

    // ---- views ----
    function device(bytes8 id) external view returns (Device memory) {
        Device memory d = _devices[id];
        if (d.state == State.Unregistered) revert UnknownDevice(id);
        return d;
    }

    function deviceState(bytes8 id) external view returns (State state, uint32 epoch) {
        Device storage d = _devices[id];
        return (d.state, d.epoch);
    }

    /// A registered gateway's record, removed ones included (`removed` set).
    function gateway(bytes32 gatewayId) external view returns (Gateway memory) {
        Gateway memory g = _gateways[gatewayId];
        if (g.operator == address(0)) revert UnknownGateway(gatewayId);
        return g;
    }

    /// The gateway's account, or address(0) when unknown (used by the audit contract).
    function gatewayAccount(bytes32 gatewayId) external view returns (address) {
        return _gateways[gatewayId].account;
    }

    function grant(bytes8 id, bytes32 gatewayId) external view returns (Grant memory g, bool current) {
        g = _grants[id][gatewayId];
        current = _isAuthorized(_devices[id], _grants[id][gatewayId], gatewayId);
    }

    /// Many devices' grants in one call (an owner re-sealing a fleet): each device's state, epoch and
    /// firmware hash, and per gateway whether it holds a grant and whether that grant is current. An
    /// unknown device comes back Unregistered with no grants.
    function grantStatus(bytes8[] calldata ids, bytes32[] calldata gatewayIds)
        external view returns (GrantStatus[] memory out)
    {
        out = new GrantStatus[](ids.length);
        for (uint256 i = 0; i < ids.length; ++i) {
            Device storage d = _devices[ids[i]];
            GrantStatus memory s = out[i];
            (s.state, s.epoch, s.firmwareHash) = (d.state, d.epoch, d.firmwareHash);
            s.granted = new bool[](gatewayIds.length);
            s.current = new bool[](gatewayIds.length);
            for (uint256 j = 0; j < gatewayIds.length; ++j) {
                Grant storage g = _grants[ids[i]][gatewayIds[j]];
                s.granted[j] = g.keyCommitment != bytes32(0);
                s.current[j] = s.granted[j] && _isAuthorized(d, g, gatewayIds[j]);
            }
        }
    }

    function isAuthorized(bytes8 id, bytes32 gatewayId) external view returns (bool) {
        return _isAuthorized(_devices[id], _grants[id][gatewayId], gatewayId);
    }

    function policy(bytes32 policyId) external view returns (Policy memory) {
        Policy memory p = _policies[policyId];
        if (p.author == address(0)) revert UnknownPolicy(policyId);
        return p;
    }

    /// The device's static X25519 public key (zero when none was registered) and whether a re-key is due.
    function deviceKey(bytes8 id) external view returns (bytes32 x25519PublicKey, bool rekeyPending) {
        return (_deviceKeys[id], _rekeyPending[id]);
    }

    function maintainerApproved(bytes8 id, address maintainer) external view returns (bool) {
        Device storage d = _devices[id];
        return d.owner != address(0) && _maintainerApprovedBy[id][maintainer] == d.owner;
    }

    // ---- internals ----
    function _transition(bytes8 id, uint256 allowedFrom) private view returns (Device storage d) {
        d = _devices[id];
        if (d.state == State.Unregistered) revert UnknownDevice(id);
        if (allowedFrom & (1 << uint256(d.state)) == 0) revert IllegalTransition(id, d.state, msg.sig);
    }

    function _onlyOwner(bytes8 id, Device storage d) private view {
        if (msg.sender != d.owner) revert NotOwner(id, msg.sender);
    }

    function _onlyOwnerOrAdmin(bytes8 id, Device storage d) private view {
        if (msg.sender != d.owner && !hasRole(DEFAULT_ADMIN_ROLE, msg.sender)) {
            revert NotOwnerOrAdmin(id, msg.sender);
        }
    }

    function _isAuthorized(Device storage d, Grant storage g, bytes32 gatewayId) private view returns (bool) {
        Gateway storage gw = _gateways[gatewayId];
        return g.keyCommitment != bytes32(0) && g.epoch == d.epoch && _isLive(d.state) && !gw.removed
            && g.generation == gw.generation;
    }

    function _isLive(State s) private pure returns (bool) {
        return s == State.Claimed || s == State.Active || s == State.Suspended;
    }
}
