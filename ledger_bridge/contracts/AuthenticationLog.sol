// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @notice The only thing the audit log needs from the registry: who a gateway's account is.
interface IGatewayDirectory {
    function gatewayAccount(bytes32 gatewayId) external view returns (address);
    function isAuthorized(bytes8 id, bytes32 gatewayId) external view returns (bool);
}

/// @title DIAMS authentication evidence (one deployment per channel, bound to its registry)
/// @notice Gateways anchor Merkle roots of batches of authentication records, so the audit trail is
/// tamper-evident without a transaction per authentication, and record clone alerts.
/// Kept apart from the registry: different writers (gateway accounts only), different growth.
contract AuthenticationLog {
    struct Anchor {
        bytes32 gatewayId;
        uint64 count;
        uint64 firstSeq;
        uint64 lastSeq;
        uint64 blockNumber;
        uint64 timestamp;
    }

    IGatewayDirectory public immutable registry;

    /// Keyed by (gateway, root): another gateway anchoring the same root first takes nothing from this one.
    mapping(bytes32 => mapping(bytes32 => Anchor)) private _anchors;
    /// Sequence numbers anchored so far per gateway: batches must move forward, never overlap.
    mapping(bytes32 => uint256) public nextSeq;
    mapping(bytes8 => uint32) public cloneAlertCount;

    error InvalidRegistry();
    error NotGatewayAccount(bytes32 gatewayId, address account);
    error BadBatch(uint64 count, uint64 firstSeq, uint64 lastSeq);
    error SequenceReplay(bytes32 gatewayId, uint64 firstSeq, uint256 nextExpected);
    error AnchorExists(bytes32 gatewayId, bytes32 merkleRoot);
    error UnknownAnchor(bytes32 gatewayId, bytes32 merkleRoot);
    error NotServingGateway(bytes8 id, bytes32 gatewayId);

    event Anchored(bytes32 indexed gatewayId, bytes32 indexed merkleRoot, uint64 count, uint64 firstSeq,
        uint64 lastSeq);
    event CloneAlert(bytes8 indexed id, bytes32 indexed gatewayId, uint32 counter);

    constructor(IGatewayDirectory registry_) {
        if (address(registry_) == address(0)) revert InvalidRegistry();
        registry = registry_;
    }

    function anchor(bytes32 gatewayId, bytes32 merkleRoot, uint64 count, uint64 firstSeq, uint64 lastSeq)
        external
    {
        _onlyGateway(gatewayId);
        if (merkleRoot == bytes32(0) || count == 0 || firstSeq > lastSeq || count > uint256(lastSeq) - firstSeq + 1) {
            revert BadBatch(count, firstSeq, lastSeq);
        }
        uint256 next = nextSeq[gatewayId];
        if (firstSeq < next) revert SequenceReplay(gatewayId, firstSeq, next);
        if (_anchors[gatewayId][merkleRoot].count != 0) revert AnchorExists(gatewayId, merkleRoot);
        _anchors[gatewayId][merkleRoot] = Anchor(gatewayId, count, firstSeq, lastSeq, uint64(block.number),
            uint64(block.timestamp));
        nextSeq[gatewayId] = uint256(lastSeq) + 1;
        emit Anchored(gatewayId, merkleRoot, count, firstSeq, lastSeq);
    }

    /// Only from a gateway authorized for that device (current grant): nobody else can smear a device.
    function cloneAlert(bytes8 id, bytes32 gatewayId, uint32 counter) external {
        _onlyGateway(gatewayId);
        if (!registry.isAuthorized(id, gatewayId)) revert NotServingGateway(id, gatewayId);
        ++cloneAlertCount[id];
        emit CloneAlert(id, gatewayId, counter);
    }

    function anchorOf(bytes32 gatewayId, bytes32 merkleRoot) external view returns (Anchor memory a) {
        a = _anchors[gatewayId][merkleRoot];
        if (a.count == 0) revert UnknownAnchor(gatewayId, merkleRoot);
    }

    function _onlyGateway(bytes32 gatewayId) private view {
        address account = registry.gatewayAccount(gatewayId);
        if (account == address(0) || account != msg.sender) revert NotGatewayAccount(gatewayId, msg.sender);
    }
}
