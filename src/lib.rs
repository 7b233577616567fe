pub mod api;
pub mod domain;

pub mod pb {
    tonic::include_proto!("dsr.v1");
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("dsr_descriptor");
}
