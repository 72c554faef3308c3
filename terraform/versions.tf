# Terraform and provider versions. Pinned so a fresh `terraform init` gets a
# provider this configuration was written against (hashicorp/aws 5.x,
# hashicorp/tls 4.x for the showcase's own CA).

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.40"
    }
    tls = {
      source  = "hashicorp/tls"
      version = "~> 4.0"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = var.tags
  }
}
