use super::*;

#[test]
fn header_round_trips_every_protocol_and_port() {
    for protocol in [
        TunnelProtocol::Detect,
        TunnelProtocol::Http1,
        TunnelProtocol::Http2,
        TunnelProtocol::Opaque,
    ] {
        for port in [1, 80, 8080, 15006, u16::MAX] {
            let header = TunnelHeader { port, protocol };
            let bytes = header.encode();
            assert_eq!(&bytes[..4], b"SYT1");
            assert_eq!(u16::from_be_bytes([bytes[4], bytes[5]]), port);
            assert_eq!(bytes[7], 0);
            assert_eq!(TunnelHeader::decode(&bytes), Ok(header));
        }
    }
    let h2 = TunnelHeader {
        port: 0x1f90,
        protocol: TunnelProtocol::Http2,
    };
    assert_eq!(h2.encode(), *b"SYT1\x1f\x90\x02\x00");
}

#[test]
fn header_decode_rejects_anything_else() {
    let good = TunnelHeader {
        port: 8080,
        protocol: TunnelProtocol::Http1,
    }
    .encode();
    let with = |i: usize, byte: u8| {
        let mut bytes = good;
        bytes[i] = byte;
        bytes
    };
    assert_eq!(
        TunnelHeader::decode(&with(3, b'2')),
        Err(HeaderError::Magic(*b"SYT2"))
    );
    assert_eq!(
        TunnelHeader::decode(b"GET / HT"),
        Err(HeaderError::Magic(*b"GET "))
    );
    assert_eq!(
        TunnelHeader::decode(&with(6, 4)),
        Err(HeaderError::Protocol(4))
    );
    assert_eq!(
        TunnelHeader::decode(&with(6, 0xff)),
        Err(HeaderError::Protocol(0xff))
    );
    assert_eq!(
        TunnelHeader::decode(&with(7, 1)),
        Err(HeaderError::Reserved(1))
    );
    let mut port0 = with(4, 0);
    port0[5] = 0;
    assert_eq!(TunnelHeader::decode(&port0), Err(HeaderError::Port));
    assert_eq!(
        TunnelHeader::decode(&[0; 8]),
        Err(HeaderError::Magic([0; 4]))
    );
}
